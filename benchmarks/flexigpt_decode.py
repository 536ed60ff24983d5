"""Decode speed of FlexiGPT's shared blocks against the dense model, unfused and fused (issue 15).

Replaces 9 of the embedded model's 30 blocks (no training: speed only), then measures greedy decode
tokens/s (128-token prompt, 64 new tokens, median of 3) for dense, shared and fused, in alternating
rounds so drifts of the machine hit all three alike; the table ends with the median of the rounds'
ratios. Writes benchmarks/results/flexigpt_decode.{json,md}.

    python benchmarks/flexigpt_decode.py
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

import prunekit
from prunekit import FlexiGPTConfig
from prunekit.evaluation.speed import measure_speed
from prunekit.models.shared_blocks import fuse_for_inference

from _common import benchmark_parser, git_commit, write_json, write_table


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--remove", type=int, default=9)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    loaded = prunekit.load_model(args.model, device="cpu", dtype="float32", progress=False)
    calibration = prunekit.load_windows(args.calibration, loaded.tokenizer, purpose="calibration", num_windows=4, seq_len=512)
    shared = prunekit.prune(loaded.model, FlexiGPTConfig(remove=args.remove, recovery=None), calibration, progress=False).model

    def decode(model) -> float:
        return measure_speed(model, prompt_tokens=128, new_tokens=64, repeats=3).decode_tokens_per_second

    rounds = []
    for _ in range(args.rounds):
        dense, unfused = decode(loaded.model), decode(shared)
        fuse_for_inference(shared)
        fused = decode(shared)
        fuse_for_inference(shared, False)
        rounds.append({"dense": dense, "shared": unfused, "fused": fused})
    commit = git_commit()
    results = {"commit": commit, "command": "python benchmarks/flexigpt_decode.py", "remove": args.remove, "rounds": rounds}
    write_json(Path(args.out), "flexigpt_decode", results)
    lines = [
        f"Commit `{commit}`, `{results['command']}`; {args.remove} of 30 blocks replaced; decode tokens/s (x dense).",
        "",
        "| round | dense | shared | fused |",
        "|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(rounds, 1):
        shared, fused = f"{r['shared']:.1f} ({r['shared'] / r['dense']:.2f}x)", f"{r['fused']:.1f} ({r['fused'] / r['dense']:.2f}x)"
        lines.append(f"| {i} | {r['dense']:.1f} | {shared} | {fused} |")
    summary = {kind: _ratio_summary([r[kind] / r["dense"] for r in rounds]) for kind in ("shared", "fused")}
    lines.append(f"| median of the rounds' ratios (min-max) | 1.00x | {summary['shared']} | {summary['fused']} |")
    write_table(Path(args.out), "flexigpt_decode", "\n".join(lines))


def _ratio_summary(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


if __name__ == "__main__":
    main()
