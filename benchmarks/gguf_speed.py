"""The speed people get: pruned SmolLM2-135M (or Gemma-3 270M) exported to GGUF and run in llama.cpp (llama-cpp-python).

Each contender is pruned (calibration: C4 windows), written as GGUF at f32, f16 and q8_0, and measured
in llama.cpp: prompt processing and generation tokens/s (median of `--repeats` runs, `--threads` threads
pinned to as many cores), file size, and WikiText-2 perplexity from llama.cpp's logits on the same
token windows as transformers' (f32 file, f32 KV cache), whose gap should stay within 0.5%.
Contenders with FFN widths rounded to a multiple of 64 (`--channel-multiple 64`) stand beside the
unrounded ones, with a paired WikiText-2 comparison (NLL per window) of the two in transformers.

The first file written is also checked as a tokenizer: WikiText-2 paragraphs split by llama.cpp against
transformers' split of the same text.

Rows are written as they finish; a rerun skips finished rows.

    python benchmarks/gguf_speed.py                       # every contender
    python benchmarks/gguf_speed.py --contenders dense 'shortgpt 6/30'
    python benchmarks/gguf_speed.py --model gemma3-270m --name gguf_gemma3_270m --ppl-windows 24 \
        --contenders dense 'shortgpt 3 blocks' 'liar ffn 30% uniform' 'liar ffn 30% uniform, x64'
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import prunekit
from prunekit import load_model, load_windows, parameter_count
from prunekit.evaluation.llama_cpp import llama_cpp_speed, llama_cpp_window_nll
from prunekit.evaluation.perplexity import perplexity
from prunekit.evaluation.significance import compare

from _common import benchmark_parser, git_commit, refuse, verdict_text, write_json, write_table

# name: method or recipe, options
CONTENDERS = {
    "dense": (None, {}),
    "shortgpt 6/30": ("shortgpt", {"remove": 6}),
    "liar 20% uniform": ("liar", {"ratio": 0.2, "channel_multiple": 1}),
    "liar 20% uniform, x64": ("liar", {"ratio": 0.2, "channel_multiple": 64}),
    "liar 20% adaptive": ("liar", {"ratio": 0.2, "allocation": "adaptive", "channel_multiple": 1}),
    "liar 20% adaptive, x64": ("liar", {"ratio": 0.2, "allocation": "adaptive", "channel_multiple": 64}),
    "liar 25% params, x64": ("liar", {"ratio": 0.25, "channel_multiple": 64}),
    # for models whose llama.cpp architecture reads one width for all layers and no biases (Gemma-3, Phi-3)
    "shortgpt 3 blocks": ("shortgpt", {"remove": 3}),
    "liar ffn 30% uniform": ("liar", {"ffn_ratio": 0.3, "channel_multiple": 1}),
    "liar ffn 30% uniform, x64": ("liar", {"ffn_ratio": 0.3, "channel_multiple": 64}),
    "shortgpt 3 + liar 10% adaptive": (
        [{"method": "shortgpt", "remove": 3}, {"method": "liar", "ratio": 0.1, "allocation": "adaptive", "channel_multiple": 1}],
        {},
    ),
}
SPEED_TYPES = ("f16", "q8_0")


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--contenders", nargs="+", help="names from the table (default: all); the first is the reference")
    parser.add_argument("--ppl-windows", type=int, default=48, help="WikiText-2 windows of 512 tokens for the perplexity check")
    parser.add_argument("--prompt", type=int, default=512, help="prompt tokens for prompt processing")
    parser.add_argument("--generate", type=int, default=128, help="tokens generated one at a time")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="gguf_speed")
    args = parser.parse_args()
    names = args.contenders or list(CONTENDERS)
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        refuse(f"unknown contender '{unknown[0]}'; choose from: {', '.join(CONTENDERS)}")
    cores = sorted(os.sched_getaffinity(0))[: args.threads]
    os.sched_setaffinity(0, cores)  # llama.cpp's threads and torch's on the same, named cores
    torch.set_num_threads(args.threads)

    out = Path(args.out)
    path = out / f"{args.name}.json"
    import json

    results = json.loads(path.read_text()) if path.exists() else {"rows": []}
    results.update(
        model=args.model,
        commit=results.get("commit") or git_commit(),
        command="python benchmarks/gguf_speed.py " + " ".join(f"'{a}'" if " " in a else a for a in sys.argv[1:]),
        settings={k: getattr(args, k) for k in ("ppl_windows", "prompt", "generate", "repeats", "threads", "calib_windows")},
        cores=cores,
    )
    done = {row["contender"] for row in results["rows"]}
    loaded = load_model(args.model, device="cpu", dtype="float32")
    dense, tokenizer = loaded.model, loaded.tokenizer
    calibration = load_windows(args.calibration, tokenizer, purpose="calibration", num_windows=args.calib_windows, seq_len=512)
    evaluation = load_windows(args.wikitext, tokenizer, purpose="evaluation", num_windows=args.ppl_windows, seq_len=512)
    prompt = evaluation.input_ids[0, : args.prompt].tolist()
    with tempfile.TemporaryDirectory(prefix="prunekit-llama-cpp-") as scratch:
        for contender in names:
            if contender in done:
                print(f"{contender}: finished in an earlier run, kept", flush=True)
                continue
            method, options = CONTENDERS[contender]
            started = time.perf_counter()
            model = dense if method is None else prunekit.prune(dense, method, calibration, progress=False, **options).model
            row = {"contender": contender, "commit": git_commit(), "prune_seconds": time.perf_counter() - started}
            row["params"] = parameter_count(model)
            transformers_ppl = perplexity(model, evaluation, progress=False)
            row["transformers"] = {"perplexity": transformers_ppl.perplexity, "window_nll": transformers_ppl.window_nll}
            row["files"] = {}
            for kind in ("f32", *SPEED_TYPES):
                exported = prunekit.export_gguf(model, tokenizer, Path(scratch) / f"{kind}.gguf", gguf_type=kind, overwrite=True)
                record = {"architecture": exported.architecture, "bytes": exported.bytes, "export_seconds": exported.seconds}
                if kind == "f32":
                    if "tokenization" not in results:
                        results["tokenization"] = tokenization_check(exported.path, tokenizer, Path(args.wikitext))
                    nll = llama_cpp_window_nll(exported.path, evaluation, args.threads)
                    record["perplexity"] = float(np.exp(np.mean(nll)))
                    record["window_nll"] = nll
                else:
                    record.update(llama_cpp_speed(exported.path, prompt, args.generate, args.repeats, args.threads))
                row["files"][kind] = record
                exported.path.unlink()
            results["rows"].append(row)
            write_json(out, args.name, results)
            f16 = row["files"]["f16"]
            print(
                f"{contender}: ppl {row['transformers']['perplexity']:.2f} (llama.cpp {row['files']['f32']['perplexity']:.2f}), "
                f"f16 {f16['prompt_tokens_per_s']:.0f} / {f16['generation_tokens_per_s']:.1f} tok/s",
                flush=True,
            )
            del model
    results["rows"].sort(key=lambda row: names.index(row["contender"]) if row["contender"] in names else len(names))
    write_json(out, args.name, results)
    write_table(out, args.name, markdown(results))


def tokenization_check(path: Path, tokenizer, wikitext: Path, count: int = 300) -> dict:
    """How many of the first `count` WikiText-2 paragraphs llama.cpp splits into exactly transformers' tokens."""
    import llama_cpp

    paragraphs = [line.strip() for line in wikitext.read_text(encoding="utf-8").splitlines() if len(line.strip()) > 40][:count]
    vocabulary = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    try:
        identical = sum(
            vocabulary.tokenize(text.encode(), add_bos=False) == tokenizer.encode(text, add_special_tokens=False) for text in paragraphs
        )
    finally:
        vocabulary.close()
    return {"paragraphs": len(paragraphs), "identical": identical}


def _versus_unrounded(rows: dict, row: dict) -> str:
    """The paired WikiText-2 difference of a rounded (x64) contender against its unrounded twin."""
    twin = rows.get(row["contender"].removesuffix(", x64"))
    if not row["contender"].endswith(", x64") or twin is None:
        return "-"
    return verdict_text(compare(twin["transformers"]["window_nll"], row["transformers"]["window_nll"], higher_is_better=False))


def markdown(results: dict) -> str:
    rows = {row["contender"]: row for row in results["rows"]}
    dense = rows.get("dense")
    settings = results["settings"]
    lines = [
        f"`{results['model']}` in llama.cpp (llama-cpp-python), {settings['threads']} threads pinned to cores {results['cores']}; "
        f"prompt processing of {settings['prompt']} tokens and generation of {settings['generate']} tokens one at a time, median of "
        f"{settings['repeats']} runs after a warm-up; perplexity on WikiText-2 test {settings['ppl_windows']}x512 from llama.cpp's "
        f"logits (f32 file, f32 KV cache) and from transformers on the same windows; pruning calibrated on "
        f"{settings['calib_windows']}x512 C4 windows (LIAR's own default is 64). Commit {results['commit']}; command: "
        f"`{results['command']}`.",
        "",
        "| contender | params (M) | llama.cpp arch | WikiText-2 ppl: transformers / llama.cpp (gap) | x64 vs unrounded (NLL/token) | "
        "f16 MiB | f16 prompt tok/s | f16 gen tok/s | gen vs dense (f16) | q8_0 MiB | q8_0 prompt tok/s | q8_0 gen tok/s | "
        "wall time (s): prune + export |",
        "|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        f32, f16, q8 = (row["files"][k] for k in ("f32", "f16", "q8_0"))
        ppl, cpp = row["transformers"]["perplexity"], f32["perplexity"]
        versus_dense = f"{f16['generation_tokens_per_s'] / dense['files']['f16']['generation_tokens_per_s']:.2f}x" if dense else "-"
        exports = sum(f["export_seconds"] for f in row["files"].values())
        lines.append(
            f"| {name} | {row['params'] / 1e6:.1f} | {f16['architecture']} | {ppl:.2f} / {cpp:.2f} ({(cpp / ppl - 1) * 100:+.2f}%) | "
            f"{_versus_unrounded(rows, row)} | {f16['bytes'] / 2**20:.0f} | {f16['prompt_tokens_per_s']:.0f} | "
            f"{f16['generation_tokens_per_s']:.1f} | {versus_dense} | {q8['bytes'] / 2**20:.0f} | {q8['prompt_tokens_per_s']:.0f} | "
            f"{q8['generation_tokens_per_s']:.1f} | {row['prune_seconds']:.0f} + {exports:.0f} |"
        )
    check = results.get("tokenization")
    if check:
        lines += [
            "",
            f"Tokenizer: llama.cpp splits {check['identical']} of {check['paragraphs']} WikiText-2 paragraphs "
            "exactly as transformers does.",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
