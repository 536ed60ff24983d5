"""`prunekit fit` on a real model at five targets: three file sizes (70%, 50% and 35% of the dense q8_0 file) and two
decode speed-ups (1.2x and 1.4x the dense model's at the same type), against the dense quantization ladder and uniform
ShortGPT and LIAR built at the chosen type, all measured in llama.cpp on the same WikiText-2 windows (used to choose)
and C4 validation windows (the papers' set; reported only). Calibration: C4 training documents.

The library, the dense ladder and the latency probes are built once and cached (--library); each finished target is
written at once to results/fit_<model>.json and .md, and a rerun skips finished targets.

    python benchmarks/fit.py                                 # SmolLM2-135M, every target
    python benchmarks/fit.py --targets bytes70 speed1.2
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import prunekit
from prunekit.data.windows import load_windows
from prunekit.evaluation.significance import compare
from prunekit.fitting import FitTargets, fit

from _common import SHARED, benchmark_parser, git_commit, refuse, verdict_text

TARGETS = {  # a speed target first: its run measures the dense ladder that the size targets are set from
    "speed1.2": ("min_speedup", 1.2),
    "bytes70": ("max_bytes", 0.70),
    "bytes50": ("max_bytes", 0.50),
    "bytes35": ("max_bytes", 0.35),
    "speed1.4": ("min_speedup", 1.4),
}


def _row(name: str, report: dict, seconds: float) -> dict:
    contenders = report["contenders"]
    chosen = next(c for c in contenders if c["name"] == report["chosen"])
    rivals = {}
    for kind in ("dense", "shortgpt", "liar-uniform"):
        eligible = [c for c in contenders if c["kind"] == kind and c["meets"] and c["name"] != chosen["name"]]
        if eligible:
            best = min(eligible, key=lambda c: c["mean_nll"])
            rivals[kind] = {
                "name": best["name"],
                "wikitext": compare(best["nll"], chosen["nll"], higher_is_better=False),
                "c4": compare(best["also"]["c4"], chosen["also"]["c4"], higher_is_better=False),
            }
    return {"target": name, "report": report, "chosen": chosen["name"], "rivals": rivals, "seconds": seconds, "commit": git_commit()}


def _ppl(nll: list[float]) -> float:
    return math.exp(sum(nll) / len(nll))


def markdown(results: dict, command: str) -> str:
    lines = [
        f"# prunekit fit on {results['model']}",
        "",
        f"Reproduce: `{command}`. Held-out: WikiText-2 test ({results['heldout']}), which the fit chooses by, and C4 validation "
        "(the first 1,000 documents), reported only. Speed: llama.cpp decode, each file timed in alternation with the dense "
        "file of its type. Paired differences are chosen minus rival in mean NLL per window; 'better' only beyond two "
        "standard errors.",
        "",
    ]
    for name, row in results["rows"].items():
        report = row["report"]
        lines += [f"## {name}: {report['targets_text']} (commit {row['commit']}, {row['seconds'] / 60:.1f} min)", ""]
        lines += [
            "| contender | type | MiB | predicted MiB | params (M) | speed-up | predicted | WikiText-2 ppl | C4 ppl | meets | wall s |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
        for c in report["contenders"]:
            mark = " **chosen**" if c["name"] == row["chosen"] else ""
            predicted = "" if c["predicted_bytes"] is None else f"{c['predicted_bytes'] / 2**20:.2f}"
            speed = "" if c["predicted_speedup"] is None else f"{c['predicted_speedup']:.2f}"
            lines.append(
                f"| {c['name']}{mark} | {c['gguf_type']} | {c['bytes'] / 2**20:.2f} | {predicted} | {c['params'] / 1e6:.1f} | "
                f"{c['speedup']:.2f} | {speed} | {c['perplexity']:.2f} | {_ppl(c['also']['c4']):.2f} | "
                f"{'yes' if c['meets'] else 'no'} | {c['seconds']:.0f} |"
            )
        lines.append("")
        for kind, rival in row["rivals"].items():
            lines.append(
                f"- against the best {kind} that meets it ({rival['name']}): WikiText-2 {verdict_text(rival['wikitext'])}, "
                f"C4 {verdict_text(rival['c4'])}"
            )
        lines += [f"- {note}" for note in report["notes"]]
        lines += ["- timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in report["timings"].items()), ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), help=f"from {', '.join(TARGETS)}")
    parser.add_argument("--c4", default=str(SHARED / "c4" / "c4-validation.00000-of-00008.first1000.jsonl"))
    parser.add_argument("--windows", type=int, default=64, help="calibration windows of 512 tokens")
    parser.add_argument("--heldout-windows", type=int, default=24)
    parser.add_argument("--library", default=None, help="library directory (default: results/runs/fit-library-<model>)")
    parser.add_argument("--types", default="q8_0,q6_k,q4_k_m,q3_k_m,q2_k")
    parser.add_argument("--candidates", type=int, default=3)
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        refuse(f"unknown target '{unknown[0]}'; choose from {', '.join(TARGETS)}")
    for path in (args.wikitext, args.c4, args.calibration):
        if not Path(path).is_file():
            refuse(f"{path} does not exist; pass the shared data's files (see ../shared/data/README.md)")
    name = args.name or f"fit_{Path(args.model).name.replace('-', '_')}"
    out = Path(args.out)
    json_path = out / f"{name}.json"
    results = json.loads(json_path.read_text()) if json_path.is_file() else {"model": args.model, "rows": {}}
    library = Path(args.library or Path(__file__).parent / "runs" / f"fit-library-{Path(args.model).name}")
    loaded = prunekit.load_model(args.model, device="cpu", dtype="float32", progress=False)
    model, tokenizer = loaded.model, loaded.tokenizer
    calibration = load_windows(args.calibration, tokenizer, purpose="calibration", num_windows=args.windows, seq_len=512)
    heldout = load_windows(args.wikitext, tokenizer, purpose="evaluation", num_windows=args.heldout_windows, seq_len=512)
    c4 = load_windows(args.c4, tokenizer, purpose="evaluation", num_windows=args.heldout_windows, seq_len=512)
    results["heldout"] = f"{args.heldout_windows} windows of 512 tokens"
    types = tuple(args.types.split(","))
    command = f"python benchmarks/fit.py --model {args.model} --windows {args.windows} --heldout-windows {args.heldout_windows}"
    for target in args.targets:
        if target in results["rows"]:
            print(f"{target}: done already")
            continue
        field_name, value = TARGETS[target]
        targets = FitTargets()
        if field_name == "max_bytes":
            ladder = library / "dense-q8_0.json"
            if not ladder.is_file():
                refuse(
                    "run a speed target first (it measures the dense ladder the size targets are set from), e.g. --targets speed1.2 bytes70"
                )
            targets.max_bytes = int(value * json.loads(ladder.read_text())["contender"]["bytes"])
        else:
            targets.min_speedup = value
        started = time.perf_counter()
        result = fit(
            model, tokenizer, targets, calibration, heldout, types=types, candidates=args.candidates, library_dir=library,
            also_measure={"c4": c4}, progress=True,
        )  # fmt: skip
        results["rows"][target] = _row(target, result.report, time.perf_counter() - started)
        out.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=1) + "\n")
        (out / f"{name}.md").write_text(markdown(results, command))
        print(f"{target}: chosen {results['rows'][target]['chosen']} ({(time.perf_counter() - started) / 60:.1f} min)", flush=True)


if __name__ == "__main__":
    main()
