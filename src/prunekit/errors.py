"""The exception types the CLI turns into a one-line message: exit code 2 for bad input, 1 for a failed computation."""


class PrunekitError(Exception):
    """A problem with what the user asked for (bad path, impossible ratio, too little data...).

    The message must say what is wrong and what to do, on one line.
    """


class ParameterError(PrunekitError):
    """A bad value of one named option: the library names the parameter (`ffn_ratio`), the CLI its flag.

    The message reads "<parameter> <detail>", so a front end can swap the name for its own spelling.
    """

    def __init__(self, parameter: str, detail: str):
        self.parameter, self.detail = parameter, detail
        super().__init__(f"{parameter} {detail}")

    def named(self, name: str) -> str:
        return f"{name} {self.detail}"


class ComputationError(Exception):
    """The input was valid but the computation failed on it (a diverged loss, a non-finite least-squares fit).

    Not a bug and not bad input: the message says what happened, what was kept, and which setting to change.
    """
