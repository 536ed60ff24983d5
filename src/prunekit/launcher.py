"""The `prunekit` command's entry point: loading the command line takes a second or two, and a Ctrl-C
in that time ends with one line rather than a traceback from inside torch."""

from __future__ import annotations

import importlib
import sys


def main() -> int:
    try:
        cli = importlib.import_module("prunekit.cli")
    except KeyboardInterrupt:
        print("prunekit: interrupted while starting; nothing was written", file=sys.stderr)
        return 130
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
