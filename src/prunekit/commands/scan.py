"""`prunekit scan`: score every decoder block; JSON and a PNG chart."""

from __future__ import annotations

from prunekit import jobs
from prunekit.commands.common import (
    data_settings,
    load_from_flags,
    print_result,
    shown,
)
from prunekit.commands.flags import (
    CALIBRATION_OPTIONS,
    MODEL_OPTIONS,
    add_tables,
)
from prunekit.models.loading import resolve_device
from prunekit.scoring.blocks import block_metric_names


def cmd_scan(args) -> int:
    loaded = load_from_flags(args, out=False)
    scores, payload = jobs.scan_job(
        loaded,
        args.out,
        args.metric,
        span=args.span,
        data=data_settings(args),
        device=resolve_device(args.device),
        offload=args.offload,
        batch_size=args.batch_size,
        progress=not args.quiet,
        overwrite=args.overwrite,
    )
    lines = [
        f"{args.metric} scores for {len(scores.scores)} {'blocks' if scores.span == 1 else 'spans'} ({scores.data['tokens']} tokens, "
        f"{scores.seconds:.1f} s); least important first: {scores.ranking()[:10]}",
        f"wrote {shown(payload['json_path'])} and {shown(payload['png_path'])}",
    ]
    return print_result(args, payload, lines)


def register(sub) -> None:
    scan = sub.add_parser("scan", help="score every decoder block; write JSON and a PNG chart")
    add_tables(scan, MODEL_OPTIONS, CALIBRATION_OPTIONS)
    scan.add_argument("--metric", default="bi", help=f"one of {', '.join(block_metric_names())} (default bi)")
    scan.add_argument("--span", type=int, default=1, help="blocks per span for --metric angular")
    scan.add_argument("--out", default="prunekit_scan.json", help="JSON output path; the PNG goes beside it")
    scan.add_argument("--overwrite", action="store_true")
    sub.choices["scan"].set_defaults(func=cmd_scan)
