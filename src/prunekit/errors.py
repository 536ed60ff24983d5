"""The one exception type the CLI turns into a one-line message and exit code 2."""


class PrunekitError(Exception):
    """A problem with what the user asked for (bad path, impossible ratio, too little data...).

    The message must say what is wrong and what to do, on one line.
    """
