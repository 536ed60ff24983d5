"""`prunekit eval`: perplexity, zero-shot tasks, multilingual perplexity and speed of a model."""

from __future__ import annotations

from prunekit import jobs
from prunekit.commands.common import (
    load_from_flags,
    local_inputs,
    print_result,
    shown,
)
from prunekit.commands.flags import (
    EVAL_OPTIONS,
    EVALUATION_FIELDS,
    MODEL_OPTIONS,
    add_tables,
)
from prunekit.comparison import check_limit
from prunekit.models.loading import resolve_device
from prunekit.reporting import results_lines


def cmd_eval(args) -> int:
    jobs.check_results_path(args.out, args.overwrite, local_inputs(args.model))
    check_limit(args.limit)
    request = jobs.evaluation_request(**{name: getattr(args, name) for name in EVALUATION_FIELDS})
    results = jobs.eval_job(
        load_from_flags(args, out=False),
        request,
        out=args.out,
        device=resolve_device(args.device),
        progress=not args.quiet,
        label=args.label,
    )
    return print_result(args, results, results_lines(args.model, results) + ([f"wrote {shown(args.out)}"] if args.out else []))


def register(sub) -> None:
    evaluate = sub.add_parser("eval", help="perplexity, zero-shot tasks, multilingual perplexity and speed of a model")
    add_tables(evaluate, MODEL_OPTIONS, EVAL_OPTIONS)
    sub.choices["eval"].set_defaults(func=cmd_eval)
