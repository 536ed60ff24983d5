"""What sharding costs and saves: recovery of the embedded model over two CPU processes (gloo), per variant.

Variants: one process with the whole batch; two processes with DDP (a full copy each); two with FSDP
(student, gradients, AdamW state and teacher sharded); two with FSDP and the teacher held whole by each
process. Each row trains the same windows (the C4 training shards, streamed) for `--tokens` tokens and
records tokens/s, the process's peak RSS (rank 0) and the measured bytes of trainable weights, gradients
and AdamW moments. The rows alternate, `--repeats` each, so a background load slows them alike.

    python benchmarks/sharding.py --c4 ../shared/data/c4 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import SHARED, c4_train_spec, git_commit, write_json

WORKER = """
import json, os, sys, time
from prunekit.models.loading import load_model
from prunekit.recovery import RecoveryConfig, recover
from prunekit.recovery.window_stream import streamed_windows
spec, tokens, seq_len, sharding, shard_teacher, out = sys.argv[1:7]
tokens, seq_len, shard_teacher = int(tokens), int(seq_len), shard_teacher == "1"
processes = int(os.environ.get("WORLD_SIZE", "1"))
loaded = load_model("smollm2-135m", device="cpu")
teacher = load_model("smollm2-135m", device="cpu").model
config = RecoveryConfig(tokens=tokens, seq_len=seq_len, micro_batch_size=1, grad_accumulation=4 // processes, scope="blocks",
                        sharding=sharding, shard_teacher=shard_teacher, precision="fp32")
started = time.perf_counter()
result = recover(loaded.model, streamed_windows(spec, loaded.tokenizer, seq_len=seq_len, seed=0), config, teacher=teacher, progress=False)
if int(os.environ.get("RANK", "0")) == 0:
    json.dump({"tokens_per_second": result.tokens_per_second, "train_s": result.seconds, "steps": result.steps,
               "loss_last": result.loss_last, "memory": result.memory, "wall_s": time.perf_counter() - started}, open(out, "w"))
"""

VARIANTS = {
    "one process": (1, "none", True),
    "DDP, 2 processes": (2, "none", True),
    "FSDP, 2 processes": (2, "fsdp", True),
    "FSDP, 2 processes, teacher whole": (2, "fsdp", False),
}


def run(name: str, spec: str, tokens: int, seq_len: int) -> dict:
    processes, sharding, shard_teacher = VARIANTS[name]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)] if processes > 1 else [sys.executable]
        script = Path(tmp) / "worker.py"
        script.write_text(WORKER)
        started = time.perf_counter()
        args = [spec, str(tokens), str(seq_len), sharding, "1" if shard_teacher else "0", str(out)]
        done = subprocess.run([*launch, str(script), *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{name} failed: {[line for line in done.stderr.splitlines() if 'rror' in line][-3:]}")
        row = json.loads(out.read_text())
    memory = row.pop("memory")
    return {
        "variant": name,
        **row,
        "process_wall_s": time.perf_counter() - started,
        "peak_rss_mib": memory["measured_peak_bytes"] / 2**20,
        "training_state_mib": memory["measured_training_state_bytes"] / 2**20,
        "estimate_total_mib": memory["estimate"]["total"] / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--c4", type=Path, default=SHARED / "c4")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    spec = c4_train_spec(args.c4)
    started = time.perf_counter()
    rows = []
    for repeat in range(args.repeats):
        for name in VARIANTS:
            rows.append({**run(name, spec, args.tokens, args.seq_len), "repeat": repeat})
            print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for name in VARIANTS:
        mine = [r for r in rows if r["variant"] == name]
        summary[name] = {
            key: sum(r[key] for r in mine) / len(mine) for key in ("tokens_per_second", "peak_rss_mib", "training_state_mib", "loss_last")
        }
    payload = {
        "commit": git_commit(),
        "command": " ".join(["python", *sys.argv]),
        "data": spec,
        "rows": rows,
        "summary": summary,
        "wall_s": time.perf_counter() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out, "sharding", payload)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
