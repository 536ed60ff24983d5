"""Does streaming recovery data cost anything? Tokens/s and peak memory, streamed shards against windows in memory.

1. Recovery speed on the embedded model: the same budget trained from windows held in memory and from
   the C4 training shards streamed (tokenized as read, packed, shuffled), alternating, `--repeats` each.
2. Memory against the budget: a fresh process reads `--budgets` tokens from the stream (no training)
   and reports its peak RSS; flat means memory does not grow with the budget.

    python benchmarks/streaming.py --c4 ../shared/data/c4 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from prunekit.data.windows import TokenWindows
from prunekit.models.loading import load_model
from prunekit.recovery import RecoveryConfig, recover
from prunekit.recovery.window_stream import streamed_windows

from _common import c4_train_spec, git_commit, write_json

READ_ONLY = """
import resource, sys, time
from prunekit.models.loading import load_model
from prunekit.recovery.window_stream import streamed_windows
loaded = load_model("smollm2-135m", device="cpu")
stream = streamed_windows(sys.argv[1], loaded.tokenizer, seq_len=512, seed=0)
before, started, budget = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter(), int(sys.argv[2])
for _ in range(budget // (512 * 64)):
    stream.take(64)
print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - started, stream.passes())
"""


def memory_row(spec: str, budget: int) -> dict:
    out = subprocess.run([sys.executable, "-c", READ_ONLY, spec, str(budget)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"reading {budget} tokens of {spec} failed: {out.stderr.strip().splitlines()[-1:]}")
    before, after, seconds, passes = out.stdout.split()[-4:]
    return {
        "budget_tokens": budget,
        "rss_after_model_mib": int(before) / 1024,
        "peak_rss_mib": int(after) / 1024,
        "read_seconds": float(seconds),
        "tokens_per_second_read": budget / float(seconds),
        "passes": None if passes == "None" else float(passes),
    }


def speed_rows(spec: str, tokens: int, repeats: int) -> list[dict]:
    loaded = load_model("smollm2-135m", device="cpu")
    teacher = load_model("smollm2-135m", device="cpu").model
    config = RecoveryConfig(tokens=tokens, seq_len=512, micro_batch_size=1, grad_accumulation=4, scope="blocks")
    stream = streamed_windows(spec, loaded.tokenizer, seq_len=512, seed=0)
    in_memory = TokenWindows(stream.take(tokens // 512), "the same windows, in memory", tokens)
    state = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    rows = []
    for repeat in range(repeats):
        for kind in ("in memory", "streamed"):
            loaded.model.load_state_dict(state)
            data = in_memory if kind == "in memory" else streamed_windows(spec, loaded.tokenizer, seq_len=512, seed=0)
            started = time.perf_counter()
            result = recover(loaded.model, data, config, teacher=teacher, progress=False)
            wall = time.perf_counter() - started
            rows.append({"data": kind, "repeat": repeat, "tokens_per_second": result.tokens_per_second, "wall_s": wall})
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--c4", type=Path, default=Path("../shared/data/c4"))
    parser.add_argument("--tokens", type=int, default=8192, help="recovery budget per speed row")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--budgets", default="1000000,10000000", help="tokens read by the memory rows")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    spec = c4_train_spec(args.c4)
    started = time.perf_counter()
    memory = [memory_row(spec, int(b)) for b in args.budgets.split(",")]
    for row in memory:
        print(row, flush=True)
    speed = speed_rows(spec, args.tokens, args.repeats)
    mean = {kind: sum(r["tokens_per_second"] for r in speed if r["data"] == kind) / args.repeats for kind in ("in memory", "streamed")}
    payload = {
        "commit": git_commit(),
        "command": " ".join(["python", *sys.argv]),
        "data": spec,
        "memory": memory,
        "speed": speed,
        "streamed_over_in_memory": mean["streamed"] / mean["in memory"],
        "wall_s": time.perf_counter() - started,
        "peak_rss_mib_this_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    write_json(args.out, "streaming", payload)
    print(json.dumps({k: payload[k] for k in ("streamed_over_in_memory", "wall_s")}))


if __name__ == "__main__":
    main()
