"""`prunekit` command line: the parser, signals and one-line errors around the commands (prunekit.commands).

Each command lives in its own module of prunekit.commands and registers its own parser; the flag tables they
share are in prunekit.commands.flags. Every user error ends in one line on stderr and exit code 2, with
nothing written.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import functools
import io
import logging
import os
import shlex
import signal
import sys
import threading
import warnings

from transformers.utils import logging as hf_logging

from prunekit.commands import cache, evaluate, export, fit, prune, recover, report, scan
from prunekit.commands.flags import CONFIGS, FLAGS
from prunekit.errors import ComputationError, PrunekitError
from prunekit.models.export import release_all_outputs
from prunekit.options import flag_message, flag_text
from prunekit.recovery.checkpoints import RecoveryInterrupted
from prunekit.version import __version__

__all__ = ["CONFIGS", "FLAGS", "build_parser", "main"]


EXIT_USAGE = 2  # bad input

EXIT_FAILED = 1  # valid input, failed computation (e.g. recovery diverged)

PACKAGE_DIRECTORY = os.path.dirname(os.path.abspath(__file__))  # prunekit's own warnings come from files under it


class _Parser(argparse.ArgumentParser):
    """Argument errors in one line that points to --help, not the whole usage block. Flags are never abbreviated:
    `--recovery-token 5` is an error, not `--recovery-tokens 5`."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"prunekit: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        """An unknown flag is reported by its command's parser, with the closest flag it has (--ffn_ratio: --ffn-ratio)."""
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            commands = next((a for a in self._actions if isinstance(a, argparse._SubParsersAction)), None)
            command = commands.choices.get(getattr(parsed, "command", None)) if commands else None
            parser = command or self
            flags = list(parser._option_string_actions)
            guess = difflib.get_close_matches(unknown[0].split("=")[0].replace("_", "-"), flags, n=1, cutoff=0.75)
            parser.error(f"unrecognized argument {unknown[0]}" + (f"; did you mean {guess[0]}?" if guess else ""))
        return parsed


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="prunekit", description="Structured pruning of LLMs.")
    parser.add_argument("--version", action="version", version=f"prunekit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (scan.register, prune.register, evaluate.register, recover.register, prune.register_methods):
        command(sub)
    for command in (fit.register, export.register, cache.register, report.register):
        command(sub)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM (what schedulers and `timeout` send) unwinds like Ctrl-C, so temporary output is removed."""


_signals_received: list[int] = []


def _terminated(signum, frame):
    _signals_received.append(signum)
    raise _Terminated


def _interrupted(signum, frame):
    _signals_received.append(signum)
    raise KeyboardInterrupt


def _stopped(terminated: bool) -> int:
    """The line and exit code of a run that a signal stopped (SIGTERM 143, Ctrl-C 130)."""
    print(f"prunekit: {'terminated' if terminated else 'interrupted'}; no partial output was written", file=sys.stderr)
    return 143 if terminated else 130


class _FlagSpelling(logging.Filter):
    """Log lines name parameters (`tokens`); the command line's user reads flags (--recovery-tokens)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = flag_text(record.getMessage(), FLAGS), None
        return True


def _speak_in_flags() -> None:
    """prunekit's own warnings and log lines name flags, as its errors do."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _FlagSpelling) for f in handler.filters):
            handler.addFilter(_FlagSpelling())
    show = warnings.showwarning
    if getattr(show, "spells_flags", False):
        return

    def show_warning(message, category, filename, lineno, file=None, line=None):
        if str(filename).startswith(PACKAGE_DIRECTORY):
            message = flag_text(str(message), FLAGS)
        show(message, category, filename, lineno, file, line)

    show_warning.spells_flags = True
    warnings.showwarning = show_warning


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
        signal.signal(signal.SIGINT, _interrupted)
    _signals_received.clear()
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    _speak_in_flags()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    os.environ.update({"TQDM_DISABLE": "1"} if getattr(args, "quiet", False) else {})
    # under torchrun / accelerate launch only the main process reports (its results and its errors)
    main_process = int(os.environ.get("RANK", "0")) == 0
    report = contextlib.nullcontext() if main_process else contextlib.redirect_stdout(io.StringIO())
    say = functools.partial(print, file=sys.stderr) if main_process else (lambda *a, **k: None)
    try:
        if getattr(args, "batch_size", 1) < 1:
            raise PrunekitError(f"--batch-size {args.batch_size} must be at least 1")
        with report:
            return args.func(args)
    except (PrunekitError, ComputationError) as error:
        # a library (transformers' lazy imports, for one) may report an interrupted import as its own error
        if _signals_received:
            return _stopped(_signals_received[0] == signal.SIGTERM)
        if isinstance(error, PrunekitError):
            say(f"prunekit: error: {flag_message(error, FLAGS)}")
            return EXIT_USAGE
        say(f"prunekit: failed: {flag_message(error, FLAGS)}")
        return EXIT_FAILED
    except RecoveryInterrupted as stopped:
        command = " ".join(shlex.quote(a) for a in ["prunekit", *(sys.argv[1:] if argv is None else argv)])
        command += "" if "--resume" in command.split() else " --resume"
        say(
            f"prunekit: stopped by {stopped.signal_name} after step {stopped.step} of {stopped.steps}; checkpoint {stopped.checkpoint}; "
            f"continue with: {command}"
        )
        return 143
    except KeyboardInterrupt as interrupt:
        return _stopped(isinstance(interrupt, _Terminated))
    finally:
        release_all_outputs()


if __name__ == "__main__":
    sys.exit(main())
