"""`prunekit` command line: a thin layer over the Python API.

Every user error ends in one line on stderr and exit code 2, with nothing written.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from prunekit.errors import PrunekitError

EXIT_USAGE = 2


# -- shared options ---------------------------------------------------------------------------
def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="hub id, local directory, .gguf file, or the alias smollm2-135m")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda if available)")
    parser.add_argument("--dtype", default="auto", help="auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16, float16")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow custom model code from the hub (off by default)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_text_field_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text-field", default="text", help="the text field of .jsonl/.json records and hub rows (default text)")


def _add_calibration_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="builtin", help="calibration data: builtin, wikitext2, c4, ptb, a hub id or a .txt/.raw/.jsonl/.json file")
    _add_text_field_option(parser)
    parser.add_argument("--windows", type=int, default=16, help="number of calibration windows (default 16)")
    parser.add_argument("--seq-len", type=int, default=512, help="tokens per calibration window (default 512)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the calibration window offsets")
    parser.add_argument("--batch-size", type=int, default=1, help="windows per forward batch")
    parser.add_argument("--offload", action="store_true", help="keep only the current block on the device (large models)")


def _add_recovery_options(parser: argparse.ArgumentParser, budget_help: str) -> None:
    from prunekit.recovery.config import DEFAULT_RECOVERY_TOKENS, PRECISIONS, SCOPES

    group = parser.add_argument_group("recovery (distillation from the dense teacher)")
    group.add_argument("--recovery-tokens", type=int, default=DEFAULT_RECOVERY_TOKENS, help=budget_help)
    group.add_argument("--recovery-data", default="self",
                       help="self (sample text from the teacher, no download; default), builtin, wikitext2, c4, a hub id or a local file")
    group.add_argument("--recovery-seq-len", type=int, default=512, help="tokens per training window (default 512)")
    group.add_argument("--lr", type=float, default=1e-4, help="peak AdamW learning rate (default 1e-4; linear warm-up, cosine decay)")
    group.add_argument("--warmup-ratio", type=float, default=0.05, help="share of steps spent warming up (default 0.05)")
    group.add_argument("--weight-decay", type=float, default=0.0)
    group.add_argument("--micro-batch-size", type=int, default=1, help="windows per forward pass")
    group.add_argument("--grad-accumulation", type=int, default=4, help="micro-batches per optimizer step (default 4)")
    group.add_argument("--scope", help=f"what trains: {', '.join(SCOPES)} (default: blocks = every remaining decoder block; "
                       "adapters for flexigpt and extend)")
    group.add_argument("--lora-rank", type=int, default=8, help="scope lora: adapter rank (merged back before export)")
    group.add_argument("--lora-alpha", type=float, default=16.0)
    group.add_argument("--kd-weight", type=float, help="weight of KL(teacher || student) on logits (default 1; 0 for extend)")
    group.add_argument("--lm-weight", type=float, help="weight of the next-token loss on the data (default 0; 1 for extend)")
    group.add_argument("--hidden-weight", type=float, default=0.0, help="weight of the final-hidden-state MSE (default 0)")
    group.add_argument("--temperature", type=float, default=1.0, help="distillation temperature (default 1)")
    group.add_argument("--precision", default="auto", help=f"{', '.join(PRECISIONS)} (auto: bf16 autocast on CUDA, fp32 on CPU)")
    group.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for activation memory")
    group.add_argument("--fixed-micro-batch", action="store_true",
                       help="on a GPU, keep --micro-batch-size as given instead of regrouping each step's windows into the "
                            "largest micro-batches that fit")


def _recovery_config(args, scope: str = "blocks", kd_weight: float = 1.0, lm_weight: float = 0.0):
    """The recovery settings of the command line; defaults that differ per command come as arguments."""
    from prunekit.recovery import RecoveryConfig

    return RecoveryConfig(
        tokens=args.recovery_tokens, seq_len=args.recovery_seq_len, micro_batch_size=args.micro_batch_size,
        grad_accumulation=args.grad_accumulation, learning_rate=args.lr, weight_decay=args.weight_decay,
        warmup_ratio=args.warmup_ratio, kd_weight=kd_weight if args.kd_weight is None else args.kd_weight,
        lm_weight=lm_weight if args.lm_weight is None else args.lm_weight,
        hidden_weight=args.hidden_weight, temperature=args.temperature, scope=args.scope or scope, lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha, precision=args.precision, gradient_checkpointing=args.gradient_checkpointing,
        fit_micro_batch=not args.fixed_micro_batch, seed=args.seed,
    )


def _recovery_windows(args, teacher, tokenizer, config, device):
    """A function making the recovery windows (called once; IteRABRe caches its result)."""
    from prunekit.recovery import recovery_windows, self_generated_windows

    if args.recovery_data == "self":
        if teacher is None:
            raise PrunekitError("--recovery-data self samples text from the --teacher; give a --teacher or a data SPEC")
        return lambda: self_generated_windows(teacher, tokenizer, num_tokens=config.tokens, seq_len=config.seq_len,
                                              seed=config.seed, device=device, progress=not args.quiet)
    return lambda: recovery_windows(args.recovery_data, tokenizer, num_tokens=config.tokens, seq_len=config.seq_len, seed=config.seed,
                                    text_field=args.text_field)


def _add_shared_block_options(parser: argparse.ArgumentParser) -> None:
    from prunekit.methods.flexigpt import DEFAULT_NORM_SCALE

    group = parser.add_argument_group("shared blocks (flexigpt, extend)")
    group.add_argument("--rank", type=int, help="adapter rank (default hidden_size/16, e.g. 36 for a 576-wide model)")
    group.add_argument("--norm-scale", type=float, default=DEFAULT_NORM_SCALE,
                       help=f"initial scale of the output normalisation (default {DEFAULT_NORM_SCALE})")
    group.add_argument("--no-output-norm", action="store_true", help="leave out the output normalisation (ablation; allows --merge)")
    group.add_argument("--no-svd-init", action="store_true", help="flexigpt: start the adapters at zero (ablation)")
    group.add_argument("--distance", default="low-rank", help="flexigpt: low-rank (default) or frobenius, to choose the shared block")
    group.add_argument("--merge", action="store_true", help="write a plain checkpoint (no memory saving; needs --no-output-norm)")


def _damping(text: str):
    """--damping as a number or 'auto' (a one-line error otherwise)."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise PrunekitError(f"--damping '{text}' is neither a number nor 'auto'") from None


def _positive(name: str, value: int) -> None:
    if value is not None and value < 1:
        raise PrunekitError(f"{name} must be at least 1 (got {value})")


def _load(args):
    from prunekit.models.loading import load_model

    return load_model(args.model, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                      place_on_device=not getattr(args, "offload", False), progress=not getattr(args, "quiet", False))


def _check_seq_len(seq_len: int, model, flag: str = "--seq-len") -> None:
    _positive(flag, seq_len)
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and seq_len > limit:
        raise PrunekitError(f"{flag} {seq_len} exceeds the model's context of {limit} tokens; use a shorter window")


def _calibration(args, loaded):
    from prunekit.data.windows import load_windows

    _positive("--windows", args.windows)
    _check_seq_len(args.seq_len, loaded.model)
    return load_windows(args.data, loaded.tokenizer, purpose="calibration", num_windows=args.windows, text_field=args.text_field,
                        seq_len=args.seq_len, seed=args.seed)


def _engine_options(args, device) -> dict:
    return {"device": device, "offload": args.offload, "batch_size": args.batch_size, "progress": not args.quiet}


def _check_limit(flag: str, limit: float | None) -> None:
    if limit is not None and not limit > 0:
        raise PrunekitError(f"{flag} {limit:g} must be positive: items per task, or a fraction of each task below 1")


def _print_json(payload) -> None:
    print(json.dumps(payload, indent=2))


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(str(row[c])) for row in rows) for c in range(len(rows[0]))]
    lines = [" | ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w) for i, (v, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def _load_for_output(args):
    """(loaded model, device) for a command that writes `--out`: the output directory is checked
    before the (slow) load, and again afterwards against the paths the model was loaded from."""
    from prunekit.models.export import check_output_dir
    from prunekit.models.loading import resolve_device

    from prunekit.evaluation.speed import weight_bytes

    check_output_dir(args.out, args.overwrite)
    loaded = _load(args)
    # the output is about the input's size at most: pruning and recovery shrink or keep it, extend's shared blocks add adapters
    check_output_dir(args.out, args.overwrite, _protected_paths(args, loaded), needed_bytes=weight_bytes(loaded.model))
    return loaded, resolve_device(args.device)


def _protected_paths(args, loaded) -> list[str]:
    paths = [loaded.location] if loaded.location else []
    if Path(args.model).expanduser().exists():
        paths.append(str(Path(args.model).expanduser()))
    return paths


# -- commands ---------------------------------------------------------------------------------
def cmd_scan(args) -> int:
    from prunekit.models.loading import resolve_device
    from prunekit.plots import plot_block_scores
    from prunekit.scoring.blocks import check_metric, scan_blocks

    check_metric(args.metric)
    out = Path(args.out).expanduser()
    if out.suffix != ".json":
        raise PrunekitError(f"--out {out} must name a .json file (a .png chart is written beside it)")
    for existing in (out, out.with_suffix(".png")):
        if existing.exists() and not args.overwrite:
            raise PrunekitError(f"{existing} exists; pass --overwrite or choose another --out")
    loaded = _load(args)
    windows = _calibration(args, loaded)
    scores = scan_blocks(loaded.model, windows, args.metric, span=args.span, **_engine_options(args, resolve_device(args.device)))
    payload = {"model": args.model, **scores.to_dict()}
    # Write both files under temporary names, then rename: a failure leaves neither half-written.
    png = out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_json, tmp_png = out.with_name(f".{out.name}.tmp"), png.with_name(f".{png.stem}.tmp.png")
    try:
        tmp_json.write_text(json.dumps(payload, indent=2) + "\n")
        plot_block_scores(scores, tmp_png, title=f"{args.model}: {args.metric}")
        os.replace(tmp_png, png)
        os.replace(tmp_json, out)
    finally:
        tmp_json.unlink(missing_ok=True)
        tmp_png.unlink(missing_ok=True)
    payload["json_path"], payload["png_path"] = str(out), str(out.with_suffix(".png"))
    if args.json:
        _print_json(payload)
    else:
        ranking = scores.ranking()
        print(f"{args.metric} scores for {len(scores.scores)} {'blocks' if scores.span == 1 else 'spans'} "
              f"({windows.num_tokens} tokens, {scores.seconds:.1f} s); least important first: {ranking[:10]}")
        print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


def cmd_prune(args) -> int:
    from prunekit.api import blocks_to_remove, prune
    from prunekit.methods import DEPTH_METHODS, PrunePlan, get_method
    from prunekit.methods.shortgpt import check_protected
    from prunekit.models.adapters import ModelAdapter

    methods = (*DEPTH_METHODS, "liar", "iterabre", "flexigpt")
    if args.method not in methods:
        raise PrunekitError(f"unknown method '{args.method}'; choose one of {', '.join(methods)}")
    width = args.method == "liar"
    if width and _is_encoder_spec(args.model):
        return _prune_encoder(args)
    if args.method == "iterabre":
        return _prune_iterabre(args)
    if args.method == "flexigpt":
        return _prune_flexigpt(args)
    if width and args.plan:
        raise PrunekitError("--plan re-applies depth plans only; LIAR recomputes its reconstruction, so run it again with the same seed")
    plan = PrunePlan.load(args.plan) if args.plan else None
    if plan is not None:
        conflicts = [flag for flag, value in (("--remove", args.remove), ("--ratio", args.ratio)) if value is not None]
        if args.method != "shortgpt" and args.method != plan.method:
            conflicts.append(f"--method {args.method}")
        if conflicts:
            raise PrunekitError(f"--plan decides what is removed; drop {', '.join(conflicts)} (the plan's method is {plan.method})")
    if plan is not None and plan.method == "iterabre":
        raise PrunekitError("an iterabre plan cannot be re-applied: its weights come from recovery training; "
                            "use the checkpoint it was saved with, or rerun with --method iterabre")
    if width:
        from prunekit.methods.liar import check_width_options

        check_width_options(args.ffn_ratio, args.head_ratio, args.criterion, args.reconstruction, args.ratio,
                            args.allocation, args.min_keep, args.channel_multiple)
        _damping(args.damping)
    elif plan is None:
        get_method(args.method)
        if args.remove is None and args.ratio is None:
            raise PrunekitError("say how many blocks to remove: --remove N or --ratio R (or re-apply a --plan)")
    loaded, device = _load_for_output(args)
    model = loaded.model
    num_blocks = ModelAdapter(model).num_blocks
    if plan is None and not width:
        count = blocks_to_remove(num_blocks, args.remove, args.ratio)
        check_protected(tuple(args.protect), num_blocks)
    request, dense_results = _compare_request(args, loaded, device)
    options = _engine_options(args, device)
    if width:
        from prunekit.methods.liar import prune_width

        windows = _calibration(args, loaded)
        width_plan = prune_width(model, windows, ffn_ratio=args.ffn_ratio, head_ratio=args.head_ratio, ratio=args.ratio,
                                 ratio_heads=args.ratio_heads, channel_multiple=args.channel_multiple,
                                 allocation=args.allocation, min_keep=args.min_keep, criterion=args.criterion,
                                 reconstruction=args.reconstruction, damping=_damping(args.damping), seed=args.seed, **options)
        width_plan["model"] = args.model
        sizes = ("per-layer widths (load with prunekit.load_model)" if width_plan["per_layer_widths"] else
                 f"FFN channels {width_plan['intermediate_size_before']} -> {width_plan['intermediate_size_after']}, "
                 f"KV groups {width_plan['kv_heads_before']} -> {width_plan['kv_heads_after']} per block")
        return _finish_prune(args, loaded, model, width_plan, request, dense_results, device,
                             f"liar: {sizes} ({args.criterion} criterion, {args.reconstruction} reconstruction, "
                             f"{width_plan['params_after'] / width_plan['params_before']:.1%} of the parameters kept; "
                             f"{width_plan['seconds']:.0f} s, peak RSS {width_plan['peak_rss_mib']:.0f} MiB)")
    if plan is None:
        windows = _calibration(args, loaded)
        if args.metric and args.method != "angular":
            options["metric"] = args.metric
        if args.protect:
            options["protect"] = tuple(args.protect)
        model, plan = prune(model, windows, method=args.method, remove=count, inplace=True, **options)
    else:
        model, plan = prune(model, plan=plan, inplace=True)
    plan.model = args.model
    return _finish_prune(args, loaded, model, plan.to_dict(), request, dense_results, device,
                         f"{plan.method}: removed blocks {plan.removed_blocks} of {plan.num_blocks_before} ({plan.reason})")


def _is_encoder_spec(spec: str) -> bool:
    from prunekit.models.encoders import ENCODER_ALIASES, ENCODER_FAMILIES

    if spec in ENCODER_ALIASES:
        return True
    config = Path(spec).expanduser() / "config.json"
    try:
        return config.is_file() and json.loads(config.read_text()).get("model_type") in ENCODER_FAMILIES
    except ValueError:
        return False


def _prune_encoder(args) -> int:
    """prune --method liar on a BERT-style encoder: the same share of every block's heads and FFN channels."""
    from prunekit.data.windows import load_windows
    from prunekit.methods import PLAN_FILE
    from prunekit.methods.encoder_width import encoder_windows, prune_encoder_width
    from prunekit.methods.liar import check_width_options
    from prunekit.models.encoders import load_encoder, save_encoder
    from prunekit.models.export import check_output_dir

    check_width_options(args.ffn_ratio, args.head_ratio, args.criterion, args.reconstruction, args.ratio, args.allocation, args.min_keep)
    _damping(args.damping)
    if args.allocation != "uniform":
        raise PrunekitError("encoders take --allocation uniform only (per-layer FFN widths are not supported for them yet)")
    check_output_dir(args.out, args.overwrite)
    model, tokenizer, directory = load_encoder(args.model)
    check_output_dir(args.out, args.overwrite, [directory])
    head_ratio = args.ratio if args.ratio is not None else (args.head_ratio or 0.0)
    ffn_ratio = args.ratio if args.ratio is not None else (args.ffn_ratio or 0.0)
    _positive("--windows", args.windows)
    _check_seq_len(args.seq_len, model)
    windows = encoder_windows(load_windows(args.data, tokenizer, purpose="calibration", num_windows=args.windows, text_field=args.text_field,
                                           seq_len=args.seq_len - 2, seed=args.seed), tokenizer)
    plan = prune_encoder_width(model, windows, head_ratio=head_ratio, ffn_ratio=ffn_ratio, criterion=args.criterion,
                               reconstruction=args.reconstruction, damping=_damping(args.damping), seed=args.seed, progress=not args.quiet)
    plan["model"] = args.model
    out = save_encoder(model, tokenizer, args.out, source=directory, extra_json={PLAN_FILE: plan}, overwrite=args.overwrite)
    if args.json:
        _print_json({"out": str(out), "plan": plan})
        return 0
    print(f"liar encoder: heads {plan['heads_before']} -> {plan['heads_after']}, FFN channels {plan['intermediate_size_before']} -> "
          f"{plan['intermediate_size_after']} per block ({args.criterion} criterion, {args.reconstruction} reconstruction)")
    print(f"parameters: {plan['params_before'] / 1e6:.1f}M -> {plan['params_after'] / 1e6:.1f}M")
    loader = "prunekit.load_model (pruned heads need per-layer widths)" if plan["per_layer_widths"] else "transformers.AutoModel"
    print(f"pruned encoder written to {out}; load it with {loader}")
    return 0


def _compare_request(args, loaded, device):
    """(request, dense results) for --compare, or (None, None)."""
    if not args.compare:
        return None, None
    from prunekit.evaluation.suite import EvaluationRequest, evaluate_model

    _check_seq_len(args.eval_seq_len, loaded.model, "--eval-seq-len")
    _check_limit("--eval-limit", args.eval_limit)
    request = EvaluationRequest(ppl=[args.eval_data], seq_len=args.eval_seq_len, ppl_windows=args.eval_windows,
                                tasks=_split_list(args.eval_tasks), data_dir=args.eval_data_dir, limit=args.eval_limit,
                                offload=args.offload)
    if request.tasks:
        from prunekit.evaluation.tasks import check_task_names

        check_task_names(request.tasks, local=args.eval_data_dir is not None)
    return request, evaluate_model(loaded, request, device=device, progress=not args.quiet, label="dense")


def _iterabre_remove_count(args, num_blocks: int) -> int:
    from prunekit.api import blocks_to_remove

    if args.target_blocks is not None:
        if args.remove is not None or args.ratio is not None:
            raise PrunekitError("give one of --remove N, --ratio R or --target-blocks K")
        if not 1 <= args.target_blocks < num_blocks:
            raise PrunekitError(f"--target-blocks {args.target_blocks} must be between 1 and {num_blocks - 1}")
        return num_blocks - args.target_blocks
    return blocks_to_remove(num_blocks, args.remove, args.ratio)


def _prune_iterabre(args) -> int:
    """prune --method iterabre: the iterative loop with recovery, checkpointed in a run directory."""
    from prunekit.data.windows import load_windows
    from prunekit.methods.iterabre import DEFAULT_METRIC, IterabreSettings, dense_teacher, iterabre
    from prunekit.models.adapters import ModelAdapter, parameter_count
    from prunekit.scoring.blocks import check_metric

    if args.plan:
        raise PrunekitError("--plan does not apply to iterabre; continue an interrupted run with --resume RUN_DIR")
    if args.remove is None and args.ratio is None and args.target_blocks is None:
        raise PrunekitError("say how many blocks to remove: --remove N, --ratio R or --target-blocks K")
    metric = args.metric or DEFAULT_METRIC
    check_metric(metric)
    config = _recovery_config(args)
    config.check(has_teacher=True)
    run_dir = Path(args.resume or args.run_dir or f"{Path(args.out).expanduser()}.iterabre-run")
    if not args.resume and (run_dir / "state.json").exists() and not args.overwrite:
        raise PrunekitError(f"{run_dir} holds an earlier run; continue it with --resume {run_dir} or pass --overwrite")
    loaded, device = _load_for_output(args)
    model = loaded.model
    num_blocks = ModelAdapter(model).num_blocks
    protect = set(args.protect) | ({0, num_blocks - 1} if args.protect_ends else set())
    settings = IterabreSettings(remove=_iterabre_remove_count(args, num_blocks), per_step=args.per_step, metric=metric,
                                protect=tuple(sorted(protect)), recovery=config)
    settings.check(num_blocks)
    _check_seq_len(config.seq_len, model, "--recovery-seq-len")
    request, dense_results = _compare_request(args, loaded, device)
    calibration = _calibration(args, loaded)
    heldout = load_windows(args.heldout_data, loaded.tokenizer, purpose="evaluation", num_windows=args.heldout_windows, text_field=args.text_field,
                           seq_len=args.seq_len) if args.heldout_windows else None
    teacher = dense_teacher(model)
    params_before = parameter_count(model)
    plan = iterabre(model, teacher, calibration, _recovery_windows(args, teacher, loaded.tokenizer, config, device), settings,
                    run_dir=str(run_dir), heldout=heldout, resume=bool(args.resume), overwrite_run=args.overwrite,
                    run_info={"model": args.model, "seed": args.seed}, device=device, offload=args.offload,
                    batch_size=args.batch_size, progress=not args.quiet)
    del teacher
    plan.model, plan.params_before, plan.params_after = args.model, params_before, parameter_count(model)
    plan_dict = plan.to_dict()
    plan_dict["recovery"] = {**config.to_dict(), "run_dir": str(run_dir)}
    steps = plan_dict["steps"]
    trail = ", ".join(f"{s['removed']}" for s in steps)
    last = steps[-1].get("heldout_perplexity_after_recovery")
    return _finish_prune(args, loaded, model, plan_dict, request, dense_results, device,
                         f"iterabre: removed blocks {trail} in {len(steps)} iterations "
                         f"({config.tokens} recovery tokens in all{'' if last is None else f'; held-out ppl after the last {last:.2f}'}); "
                         f"run log: {run_dir / 'state.json'}")


def _flexigpt_options(args) -> dict:
    from prunekit.methods.flexigpt import DISTANCES

    if args.distance not in DISTANCES:
        raise PrunekitError(f"unknown --distance '{args.distance}'; use one of {', '.join(DISTANCES)}")
    if args.rank is not None and args.rank < 1:
        raise PrunekitError(f"--rank {args.rank} must be at least 1")
    if args.merge and not args.no_output_norm:
        raise PrunekitError("--merge needs --no-output-norm: output normalisation has no equivalent in a plain checkpoint")
    return {"rank": args.rank, "output_norm": None if args.no_output_norm else args.norm_scale}


def _train_shared_blocks(args, loaded, model, teacher, device, default_kd: float, default_lm: float) -> dict | None:
    """Recovery of the shared blocks' adapters (flexigpt, extend); None when --recovery-tokens is 0."""
    if args.recovery_tokens == 0:
        return None
    from prunekit.recovery import recover

    config = _recovery_config(args, scope="adapters", kd_weight=default_kd, lm_weight=default_lm)
    config.check(has_teacher=teacher is not None)
    _check_seq_len(config.seq_len, model, "--recovery-seq-len")
    windows = _recovery_windows(args, teacher, loaded.tokenizer, config, device)()
    result = recover(model, windows, config, teacher=teacher if (config.kd_weight or config.hidden_weight) else None,
                     device=device, progress=not args.quiet)
    return {k: v for k, v in result.to_dict().items() if k != "history"}


def _shared_saver(args):
    """Writes a shared-block checkpoint, or with --merge a plain one."""
    from prunekit.models.shared_checkpoint import merge_shared_blocks, save_shared_model

    def save(model, tokenizer, out, **kwargs):
        if args.merge:
            from prunekit.models.export import save_model

            merge_shared_blocks(model)
            return save_model(model, tokenizer, out, **kwargs)
        return save_shared_model(model, tokenizer, out, **kwargs)

    return save


def _prune_flexigpt(args) -> int:
    """prune --method flexigpt: replace the least important blocks by shared blocks with adapters."""
    from prunekit.api import blocks_to_remove
    from prunekit.methods.flexigpt import replace_blocks
    from prunekit.methods.iterabre import dense_teacher
    from prunekit.methods.shortgpt import check_protected, lowest_scoring
    from prunekit.models.adapters import ModelAdapter, parameter_count
    from prunekit.scoring.blocks import check_metric, scan_blocks

    if args.plan:
        raise PrunekitError("--plan does not apply to flexigpt; its adapters come from the weights, so rerun it")
    if args.remove is None and args.ratio is None:
        raise PrunekitError("say how many blocks to replace: --remove N or --ratio R")
    metric = args.metric or "bi"
    check_metric(metric)
    options = _flexigpt_options(args)
    if args.recovery_tokens:
        _recovery_config(args, scope="adapters").check(has_teacher=True)
    loaded, device = _load_for_output(args)
    model = loaded.model
    count = blocks_to_remove(ModelAdapter(model).num_blocks, args.remove, args.ratio)
    check_protected(tuple(args.protect), ModelAdapter(model).num_blocks)
    request, dense_results = _compare_request(args, loaded, device)
    windows = _calibration(args, loaded)
    scores = scan_blocks(model, windows, metric, **_engine_options(args, device))
    removed = lowest_scoring(scores.scores, count, tuple(args.protect))
    teacher = dense_teacher(model) if args.recovery_tokens else None
    record = replace_blocks(model, removed, svd_init=not args.no_svd_init, distance=args.distance, progress=not args.quiet, **options)
    recovery = _train_shared_blocks(args, loaded, model, teacher, device, default_kd=1.0, default_lm=0.0)
    del teacher
    plan = {"method": "flexigpt", "removed_blocks": removed, "num_blocks_before": len(scores.scores), "metric": metric,
            "scores": scores.scores, "data": windows.summary(), "model": args.model, **record, "recovery": recovery,
            "merged": bool(args.merge)}
    plan["params_after"] = parameter_count(model)
    return _finish_prune(args, loaded, model, plan, request, dense_results, device,
                         f"flexigpt: blocks {removed} replaced by shared blocks {record['shares_with']} + rank-{record['rank']} "
                         f"adapters ({record['own_parameters_fraction_of_block']:.1%} of a block each"
                         f"{'' if recovery is None else ', trained on ' + str(recovery['tokens']) + ' tokens'})",
                         saver=_shared_saver(args))


def cmd_extend(args) -> int:
    """Grow a model deeper with repeated shared blocks, each with its own adapters, then train them."""
    from prunekit.methods.flexigpt import extend_model
    from prunekit.methods.iterabre import dense_teacher

    options = _flexigpt_options(args)
    loaded, device = _load_for_output(args)
    model = loaded.model
    original = dense_teacher(model) if args.recovery_tokens else None
    record = extend_model(model, args.to_blocks, pattern=args.pattern, seed=args.seed, **options)
    record["recovery"] = _train_shared_blocks(args, loaded, model, original, device, default_kd=0.0, default_lm=1.0)
    record.update(method="extend", model=args.model, merged=bool(args.merge))
    from prunekit.methods import PLAN_FILE

    out = _shared_saver(args)(model, loaded.tokenizer, args.out, overwrite=args.overwrite, extra_json={PLAN_FILE: record},
                              protected=_protected_paths(args, loaded))
    if args.json:
        _print_json({"out": str(out), "plan": record})
        return 0
    print(f"extend: {record['blocks_before']} -> {record['blocks_after']} blocks ({args.pattern} pattern, rank {record['rank']}); "
          f"parameters {record['params_before'] / 1e6:.1f}M -> {record['params_after'] / 1e6:.1f}M")
    print(f"extended checkpoint written to {out} (load it with prunekit.load_model)")
    return 0


def _finish_prune(args, loaded, model, plan: dict, request, dense_results, device, summary: str, saver=None) -> int:
    """Evaluate the pruned model if asked, save checkpoint, plan and report, and print the outcome."""
    from prunekit.methods import PLAN_FILE
    from prunekit.models.export import save_model

    saver = saver or save_model

    extra = {PLAN_FILE: plan}
    evaluation = {}
    if request is not None:
        from prunekit.evaluation.suite import evaluate_model

        label = (f"{plan['method']} -{len(plan['removed_blocks'])}" if "removed_blocks" in plan
                 else f"{plan['method']} ffn {plan['ffn_ratio']} heads {plan['head_ratio']}")
        pruned_results = evaluate_model(loaded, request, device=device, progress=not args.quiet, label=label)
        pruned_results["plan"] = plan
        evaluation = {"dense": dense_results, "pruned": pruned_results}
        extra["prunekit_eval.json"] = evaluation
    from prunekit.recovery.distributed import on_main_process

    on_main_process(lambda: saver(model, loaded.tokenizer, args.out, overwrite=args.overwrite, extra_json=extra,
                                  protected=_protected_paths(args, loaded)))
    out = Path(args.out).expanduser().resolve()
    if evaluation:
        from prunekit.reporting import write_report

        write_report([evaluation["dense"], evaluation["pruned"]], out / "report", baseline="dense")
    if args.json:
        _print_json({"out": str(out), "plan": plan, "evaluation": evaluation})
        return 0
    print(summary)
    if evaluation:
        print(_comparison_table(evaluation["dense"], evaluation["pruned"]))
        print(f"report: {out / 'report' / 'report.md'}")
    else:
        print(f"parameters: {plan['params_before'] / 1e6:.1f}M -> {plan['params_after'] / 1e6:.1f}M")
    print(f"pruned checkpoint written to {out} (plan: {out / PLAN_FILE})")
    return 0


def _comparison_table(dense: dict, pruned: dict) -> str:
    """Before/after table: blocks, parameters, perplexity, forward tokens/s and task accuracies."""
    def row(name, a, b, fmt="{:.2f}"):
        return [name, fmt.format(a), fmt.format(b), f"{b / a:.2f}" if a else "-"]

    rows = [["", "dense", "pruned", "pruned/dense"], row("blocks", dense["blocks"], pruned["blocks"], "{}"),
            row("parameters (M)", dense["parameters"] / 1e6, pruned["parameters"] / 1e6, "{:.1f}")]
    for spec, result in dense.get("perplexity", {}).items():
        other = pruned["perplexity"][spec]
        rows.append(row(f"perplexity {spec} ({result['windows']}x{result['seq_len']})", result["perplexity"], other["perplexity"]))
        rows.append(row("forward tokens/s", result["tokens_per_second"], other["tokens_per_second"], "{:.0f}"))
    for task, values in dense.get("tasks", {}).items():
        metric = "acc_norm" if "acc_norm" in values else "acc"
        rows.append(row(f"{task} {metric}", values[metric], pruned["tasks"][task][metric], "{:.4f}"))
    return _table(rows)


def _split_list(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def cmd_eval(args) -> int:
    from prunekit.evaluation.suite import EvaluationRequest, evaluate_model
    from prunekit.models.loading import resolve_device

    _positive("--windows", args.windows)
    _positive("--batch-size", args.batch_size)
    _check_limit("--limit", args.limit)
    out = Path(args.out).expanduser() if args.out else None
    if out is not None and out.is_dir():
        raise PrunekitError(f"--out {out} is a directory; name the .json file to write")
    if out is not None and out.exists() and not args.overwrite:
        raise PrunekitError(f"{out} exists; pass --overwrite or choose another --out")
    tasks = _split_list(args.tasks)
    if tasks:
        from prunekit.evaluation.tasks import check_task_names

        check_task_names(tasks, local=args.data_dir is not None)
    if args.data_dir and not Path(args.data_dir).expanduser().is_dir():
        raise PrunekitError(f"--data-dir {args.data_dir} is not a directory")
    if _is_encoder_spec(args.model):
        raise PrunekitError("prunekit eval measures causal LMs; for an encoder compare sentence embeddings "
                            "(prunekit.models.encoders.sentence_embeddings, benchmarks/encoder_width.py)")
    ppl = args.ppl or ([] if (tasks or args.flores or args.speed) else ["builtin"])
    request = EvaluationRequest(ppl=ppl, seq_len=args.seq_len, ppl_windows=args.windows, tasks=tasks,
                                data_dir=args.data_dir, limit=args.limit, task_batch_size=args.task_batch_size,
                                flores=args.flores, languages=_split_list(args.languages) or None,
                                flores_windows=args.flores_windows, speed=args.speed, batch_size=args.batch_size,
                                offload=args.offload)
    loaded = _load(args)
    _check_seq_len(args.seq_len, loaded.model)
    results = evaluate_model(loaded, request, device=resolve_device(args.device), progress=not args.quiet, label=args.label)
    if out is not None:
        from prunekit.jsonfiles import write_json_atomically

        write_json_atomically(out, results)
    if args.json:
        _print_json(results)
        return 0
    print(f"{args.model}: {results['blocks']} blocks, {results['parameters'] / 1e6:.1f}M parameters")
    for spec, result in results.get("perplexity", {}).items():
        print(f"  perplexity {result['perplexity']:.3f} on {result['data']} ({result['windows']} windows x "
              f"{result['seq_len']} tokens), {result['tokens_per_second']:.0f} tokens/s forward")
    for task, values in results.get("tasks", {}).items():
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in values.items() if k in ("acc", "acc_norm", "perplexity"))
        print(f"  {task}: {metrics} ({values.get('items')} items, {values['seconds']:.0f} s)")
    for language, result in results.get("multilingual", {}).items():
        print(f"  {language}: perplexity {result['perplexity']:.2f}")
    if "speed" in results:
        speed = results["speed"]
        print(f"  prefill {speed['prefill_tokens_per_second']:.0f} tokens/s, decode {speed['decode_tokens_per_second']:.1f} tokens/s, "
              f"peak memory {speed['peak_memory_bytes'] / 2**20:.0f} MiB ({speed['peak_memory_kind']})")
    if out is not None:
        print(f"wrote {out}")
    return 0


def cmd_recover(args) -> int:
    """Distil a teacher into a (pruned) model on a token budget and save the result."""
    from prunekit.data.windows import load_windows
    from prunekit.evaluation.perplexity import perplexity
    from prunekit.methods import PLAN_FILE
    from prunekit.models.export import check_output_dir, save_model
    from prunekit.models.loading import load_model, resolve_device
    from prunekit.recovery import recover

    config = _recovery_config(args, kd_weight=1.0 if args.teacher else 0.0, lm_weight=0.0 if args.teacher else 1.0)
    config.check(has_teacher=args.teacher is not None)
    if args.recovery_data == "self" and args.teacher is None:
        raise PrunekitError("--recovery-data self samples text from the --teacher; give a --teacher or a data SPEC")
    check_output_dir(args.out, args.overwrite)
    loaded = _load(args)
    protected = _protected_paths(args, loaded)
    teacher = None
    if args.teacher:
        teacher_loaded = load_model(args.teacher, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
        teacher = teacher_loaded.model
        protected += [p for p in (teacher_loaded.location, args.teacher) if p and Path(p).expanduser().exists()]
        if len(loaded.tokenizer) != len(teacher_loaded.tokenizer):
            raise PrunekitError("the --teacher has another vocabulary than --model; distillation needs the same tokenizer")
    check_output_dir(args.out, args.overwrite, protected)
    device = resolve_device(args.device)
    _check_seq_len(config.seq_len, loaded.model, "--recovery-seq-len")
    heldout = load_windows(args.heldout_data, loaded.tokenizer, purpose="evaluation", num_windows=args.heldout_windows, text_field=args.text_field,
                           seq_len=config.seq_len) if args.heldout_windows else None
    before = perplexity(loaded.model, heldout, device=device, progress=False).perplexity if heldout else None
    windows = _recovery_windows(args, teacher, loaded.tokenizer, config, device)()
    result = recover(loaded.model, windows, config, teacher=teacher, device=device, progress=not args.quiet)
    after = perplexity(loaded.model, heldout, device=device, progress=False).perplexity if heldout else None
    summary = {**result.to_dict(), "model": args.model, "teacher": args.teacher,
               "heldout": heldout.summary() if heldout else None, "heldout_perplexity_before": before, "heldout_perplexity_after": after}
    extra = {"prunekit_recovery.json": summary}
    plan_path = Path(loaded.location) / PLAN_FILE if loaded.location else None
    if plan_path is not None and plan_path.is_file():
        from prunekit.jsonfiles import read_json_object

        extra[PLAN_FILE] = {**read_json_object(plan_path, "plan"), "recovery": {k: v for k, v in summary.items() if k != "history"}}
    from prunekit.recovery.distributed import on_main_process

    on_main_process(lambda: save_model(loaded.model, loaded.tokenizer, args.out, overwrite=args.overwrite, extra_json=extra,
                                       protected=protected))
    out = Path(args.out).expanduser().resolve()
    if args.json:
        _print_json({"out": str(out), "recovery": summary})
        return 0
    print(f"recovered on {result.tokens} tokens of {result.data} in {result.steps} steps, {result.seconds:.0f} s "
          f"({result.tokens_per_second:.0f} tokens/s{f', MFU {result.mfu:.0%}' if result.mfu is not None else ''} on {result.device}, "
          f"micro-batch {result.micro_batch_size}); objective {result.loss_first:.4f} -> {result.loss_last:.4f}")
    if heldout:
        print(f"held-out perplexity ({heldout.description}, {heldout.num_windows}x{heldout.seq_len}): {before:.2f} -> {after:.2f}")
    print(f"recovered checkpoint written to {out} (log: {out / 'prunekit_recovery.json'})")
    return 0


def cmd_report(args) -> int:
    from prunekit.reporting import write_report

    paths = write_report(args.results, args.out, overwrite=args.overwrite, baseline=args.baseline)
    if args.json:
        _print_json({k: str(v) for k, v in paths.items()})
    else:
        print(f"wrote {paths['markdown']} and {paths['html']}")
    return 0


# -- parser -----------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """Argument errors in one line that points to --help, not the whole usage block."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"prunekit: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from prunekit import __version__
    from prunekit.methods import DEPTH_METHODS
    from prunekit.scoring.blocks import METRICS

    parser = _Parser(prog="prunekit", description="Structured pruning of LLMs.")
    parser.add_argument("--version", action="version", version=f"prunekit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    scan = sub.add_parser("scan", help="score every decoder block; write JSON and a PNG chart")
    _add_model_options(scan)
    _add_calibration_options(scan)
    scan.add_argument("--metric", default="bi", help=f"one of {', '.join(METRICS)} (default bi)")
    scan.add_argument("--span", type=int, default=1, help="blocks per span for --metric angular")
    scan.add_argument("--out", default="prunekit_scan.json", help="JSON output path; the PNG goes beside it")
    scan.add_argument("--overwrite", action="store_true")
    scan.set_defaults(func=cmd_scan)

    prune = sub.add_parser("prune", help="remove decoder blocks and write a checkpoint plus prunekit_plan.json")
    _add_model_options(prune)
    _add_calibration_options(prune)
    prune.add_argument("--method", default="shortgpt", help=f"one of {', '.join(DEPTH_METHODS)}, iterabre, flexigpt, liar (default shortgpt)")
    prune.add_argument("--remove", type=int, help="number of blocks to remove")
    prune.add_argument("--ratio", type=float, help="fraction of blocks to remove, in (0, 1); liar: fraction of every block's "
                                                  "parameters, spent on FFN channels (see --ratio-heads)")
    prune.add_argument("--ratio-heads", action="store_true", help="liar --ratio: let whole KV groups take part (uniform: "
                                                                  "where they fit; adaptive: ranked with the channels)")
    prune.add_argument("--metric", help=f"score for shortgpt/sleb (default bi / removal-loss): {', '.join(METRICS)}")
    prune.add_argument("--protect", type=int, nargs="*", default=[], help="block indices never removed")
    prune.add_argument("--protect-ends", action="store_true", help="never remove the first and the last block")
    prune.add_argument("--target-blocks", type=int, help="iterabre: remove blocks until K remain")
    prune.add_argument("--per-step", type=int, default=1, help="iterabre: blocks removed per iteration (default 1)")
    prune.add_argument("--run-dir", help="iterabre: where iteration checkpoints and the log go (default OUT.iterabre-run)")
    prune.add_argument("--resume", metavar="RUN_DIR", help="iterabre: continue an interrupted run from its last finished iteration")
    prune.add_argument("--heldout-data", default="builtin", help="iterabre: perplexity data logged after each iteration (default builtin)")
    prune.add_argument("--heldout-windows", type=int, default=4, help="iterabre: held-out windows per check (0 = none; default 4)")
    prune.add_argument("--ffn-ratio", type=float, help="liar: fraction of every block's FFN channels to remove")
    prune.add_argument("--head-ratio", type=float, help="liar: fraction of every block's KV groups (with their query heads) to remove")
    prune.add_argument("--criterion", default="wanda", help="liar: magnitude, wanda, fluctuation, taylor (one gradient pass) or random")
    prune.add_argument("--allocation", default="uniform", choices=["uniform", "adaptive"],
                       help="liar: same widths in every layer (standard config), or adaptive per-layer widths by global "
                            "ranking (needs prunekit.load_model to reload)")
    prune.add_argument("--channel-multiple", type=int, default=1,
                       help="liar: round each layer's kept FFN channels to a multiple of N (64 suits GPU matmuls; default 1)")
    prune.add_argument("--min-keep", type=float, default=0.1, help="liar --allocation adaptive: least share of a layer's FFN "
                                                                     "channels kept (and always one KV group; default 0.1)")
    prune.add_argument("--reconstruction", default="liar", help="liar: none, bias (FLAP) or liar (least squares)")
    prune.add_argument("--damping", default="auto",
                       help="liar: ridge damping relative to the mean Gram diagonal, or 'auto' (chosen on held-out "
                            "calibration batches from 1e-4..1, the default)")
    prune.add_argument("--plan", help="re-apply a prunekit_plan.json (file or checkpoint directory) instead of scoring")
    prune.add_argument("--out", required=True, help="output directory for the pruned checkpoint")
    prune.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    prune.add_argument("--compare", "--eval", action="store_true",
                       help="evaluate before and after (perplexity, throughput, optional tasks) and write DIR/report/")
    prune.add_argument("--eval-data", default="builtin", help="perplexity data for --compare (default: builtin evaluation half)")
    prune.add_argument("--eval-windows", type=int, default=16, help="perplexity windows for --compare (default 16)")
    prune.add_argument("--eval-seq-len", type=int, default=512)
    prune.add_argument("--eval-tasks", help="comma-separated lm-eval tasks for --compare")
    prune.add_argument("--eval-data-dir", help="read --eval-tasks from local files (layout of prunekit's shared data)")
    prune.add_argument("--eval-limit", type=float, help="items per task for --compare")
    _add_shared_block_options(prune)
    _add_recovery_options(prune, "iterabre: total recovery tokens, split evenly over the iterations; flexigpt: adapter "
                                 "training tokens, 0 = none (default 2.5M)")
    prune.set_defaults(func=cmd_prune)

    evaluate = sub.add_parser("eval", help="perplexity, zero-shot tasks, multilingual perplexity and speed of a model")
    _add_model_options(evaluate)
    evaluate.add_argument("--ppl", nargs="+", help="perplexity data: builtin, wikitext2, c4, ptb or local files (default builtin)")
    evaluate.add_argument("--seq-len", type=int, default=512, help="window length (512 or 2048 are common)")
    evaluate.add_argument("--windows", type=int, help="use only the first N windows (default: all)")
    evaluate.add_argument("--batch-size", type=int, default=1)
    evaluate.add_argument("--offload", action="store_true", help="run block by block with one block on the device")
    evaluate.add_argument("--tasks", help="comma-separated lm-eval task names, e.g. piqa,arc_easy,hellaswag")
    evaluate.add_argument("--data-dir", help="read the tasks from local files laid out as in prunekit's shared data")
    evaluate.add_argument("--limit", type=float, help="items per task (a fraction if < 1), for quick runs")
    evaluate.add_argument("--task-batch-size", type=int, default=8)
    evaluate.add_argument("--flores", help="FLORES-200 folder for per-language perplexity")
    evaluate.add_argument("--languages", help="comma-separated FLORES codes (default: all found)")
    evaluate.add_argument("--flores-windows", type=int, help="windows per language (default: all)")
    evaluate.add_argument("--speed", action="store_true", help="prefill/decode tokens/s, peak memory, size")
    evaluate.add_argument("--label", help="name of this model in reports (default: --model)")
    evaluate.add_argument("--out", help="write the results JSON here (for prunekit report)")
    evaluate.add_argument("--overwrite", action="store_true")
    evaluate.set_defaults(func=cmd_eval)

    recover_cmd = sub.add_parser("recover", help="distil a dense teacher into a pruned model on a token budget")
    _add_model_options(recover_cmd)
    recover_cmd.add_argument("--teacher", help="the dense model to distil from (without one, plain next-token training)")
    recover_cmd.add_argument("--seed", type=int, default=0, help="seed for data order and self-generated text")
    _add_text_field_option(recover_cmd)
    recover_cmd.add_argument("--heldout-data", default="builtin", help="perplexity data checked before and after (default builtin)")
    recover_cmd.add_argument("--heldout-windows", type=int, default=4, help="held-out windows (0 = skip; default 4)")
    recover_cmd.add_argument("--out", required=True, help="output directory for the recovered checkpoint")
    recover_cmd.add_argument("--overwrite", action="store_true")
    _add_recovery_options(recover_cmd, "tokens to train on (default 2.5M)")
    recover_cmd.set_defaults(func=cmd_recover)

    extend = sub.add_parser("extend", help="grow a model deeper by repeating blocks with their own adapters (FlexiGPT)")
    _add_model_options(extend)
    extend.add_argument("--to-blocks", type=int, required=True, help="number of blocks after extension")
    _add_text_field_option(extend)
    extend.add_argument("--pattern", default="block", help="block: each repeat right after its source, spread over the depth; "
                                                          "sequential: the last blocks repeated as one run")
    extend.add_argument("--seed", type=int, default=0)
    extend.add_argument("--out", required=True)
    extend.add_argument("--overwrite", action="store_true")
    _add_shared_block_options(extend)
    _add_recovery_options(extend, "training tokens for the new blocks' adapters, 0 = none (default 2.5M)")
    extend.set_defaults(func=cmd_extend)

    report = sub.add_parser("report", help="Markdown + HTML report with tables and plots from eval results")
    report.add_argument("results", nargs="+", help="results JSON files written by prunekit eval --out")
    report.add_argument("--out", required=True, help="output directory")
    report.add_argument("--baseline", help="label or file of the dense model for ratios (default: the one with most blocks)")
    report.add_argument("--overwrite", action="store_true")
    report.add_argument("--json", action="store_true")
    report.set_defaults(func=cmd_report)
    return parser


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


class _Terminated(KeyboardInterrupt):
    """SIGTERM (what schedulers and `timeout` send) unwinds like Ctrl-C, so temporary output is removed."""


def _terminated(signum, frame):
    raise _Terminated


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_libraries()
    if getattr(args, "quiet", False):
        os.environ["TQDM_DISABLE"] = "1"
    # under torchrun / accelerate launch only the main process reports
    report = contextlib.nullcontext() if int(os.environ.get("RANK", "0")) == 0 else contextlib.redirect_stdout(io.StringIO())
    try:
        if getattr(args, "batch_size", 1) < 1:
            raise PrunekitError(f"--batch-size {args.batch_size} must be at least 1")
        with report:
            return args.func(args)
    except PrunekitError as error:
        print(f"prunekit: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as interrupt:
        terminated = isinstance(interrupt, _Terminated)
        print(f"prunekit: {'terminated' if terminated else 'interrupted'}; no partial output was written", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        from prunekit.models.export import release_all_outputs

        release_all_outputs()


if __name__ == "__main__":
    sys.exit(main())
