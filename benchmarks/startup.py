"""How long the command line takes before it does anything: `prunekit --help` and `prunekit prune --help`,
wall time of a fresh process, median of `--repeats` runs, and how many modules each loads.

    python benchmarks/startup.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import benchmark_parser, git_commit, write_json, write_table

COMMANDS = [["--help"], ["prune", "--help"], ["eval", "--help"]]
COUNT = (
    "import sys; from prunekit.launcher import main; sys.argv = ['prunekit', *{args!r}]\n"
    "try:\n    main()\nexcept SystemExit:\n    pass\nprint(len(sys.modules), file=sys.stderr)"
)


def measure(args: list[str], repeats: int) -> dict:
    prunekit = str(Path(sys.executable).with_name("prunekit"))
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([prunekit, *args], check=True, capture_output=True)
        seconds.append(time.perf_counter() - started)
    modules = subprocess.run([sys.executable, "-c", COUNT.format(args=args)], capture_output=True, text=True, check=True)
    return {
        "command": " ".join(["prunekit", *args]),
        "seconds": seconds,
        "median": statistics.median(seconds),
        "modules": int(modules.stderr.split()[-1]),
    }


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = [measure(command, args.repeats) for command in COMMANDS]
    commit = git_commit()
    table = [
        f"CLI start-up, commit {commit}, {os.cpu_count()} CPUs, median of {args.repeats} fresh processes (`python benchmarks/startup.py`)",
        "",
        "| command | median s | min s | max s | modules loaded |",
        "|---|---|---|---|---|",
    ]
    table += [
        f"| `{r['command']}` | {r['median']:.2f} | {min(r['seconds']):.2f} | {max(r['seconds']):.2f} | {r['modules']} |" for r in rows
    ]
    out = Path(args.out)
    write_json(out, "startup", {"commit": commit, "rows": rows})
    write_table(out, "startup", "\n".join(table))
    print(json.dumps([r["median"] for r in rows]))


if __name__ == "__main__":
    main()
