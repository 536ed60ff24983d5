"""Issue 13's CPU target: `prunekit prune --method liar --ratio 0.2` against `prunekit scan --metric bi`,
whole commands on the same data and windows, alternating, the median of the rounds.

Whole commands include imports, model load and tokenisation, as a user's run does. The machine must
be otherwise idle: two cores shared with another job make single runs swing by a third.
`--base-src DIR` times LIAR from another checkout's `src/` too (e.g. a `git worktree` of an older
commit), in the same rounds, so that a change is compared under the same conditions.

    python benchmarks/cpu_ratio.py
    git worktree add /tmp/base <commit> && python benchmarks/cpu_ratio.py --base-src /tmp/base/src
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import benchmark_parser, git_commit, write_json, write_table


def _timed(name: str, command: list[str], env: dict) -> float:
    """Wall time of one whole command; a failing command stops the benchmark with its own last error line."""
    started = time.perf_counter()
    finished = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        lines = [line for line in finished.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {finished.returncode}"
        raise SystemExit(f"error: '{name}' failed ({reason}); run it alone to see why: {' '.join(command)}")
    return seconds


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--base-src", help="also time LIAR with this src/ directory first on PYTHONPATH")
    args = parser.parse_args()
    prunekit = [sys.executable, "-m", "prunekit.cli"]
    data = ["--model", args.model, "--data", args.calibration, "--windows", str(args.calib_windows), "--quiet"]
    env = dict(os.environ)
    contenders = {"scan": env, "liar": env}
    if args.base_src:
        contenders["liar (base)"] = {**env, "PYTHONPATH": str(Path(args.base_src).resolve())}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            for name, name_env in contenders.items():
                out = Path(scratch) / f"{name.replace(' ', '_')}_{round_}"
                if name == "scan":
                    command = prunekit + ["scan", *data, "--metric", "bi", "--out", str(out) + ".json"]
                else:
                    command = prunekit + [
                        "prune",
                        *data,
                        "--method",
                        "liar",
                        "--ratio",
                        "0.2",
                        "--channel-multiple",
                        "1",
                        "--out",
                        str(out),
                    ]
                times[name].append(_timed(name, command, name_env))
                print(f"round {round_ + 1} {name}: {times[name][-1]:.2f} s", flush=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    results = {
        "commit": git_commit(),
        "command": "python benchmarks/cpu_ratio.py " + " ".join(sys.argv[1:]),
        "base_src": args.base_src,
        "seconds": times,
        "median_seconds": medians,
        "ratio": {name: medians[name] / medians["scan"] for name in times if name != "scan"},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out, "cpu_ratio", results)
    lines = [
        f"Commit {results['commit']}; command: `{results['command']}`; {args.rounds} alternating rounds, median.",
        "",
        "| command | seconds per round | median s | / scan (target ≤ 1.5x) |",
        "|---|---|---:|---:|",
    ]
    for name, values in times.items():
        ratio = "-" if name == "scan" else f"{results['ratio'][name]:.2f}x"
        lines.append(f"| {name} | {', '.join(f'{v:.2f}' for v in values)} | {medians[name]:.2f} | {ratio} |")
    write_table(out, "cpu_ratio", "\n".join(lines))


if __name__ == "__main__":
    main()
