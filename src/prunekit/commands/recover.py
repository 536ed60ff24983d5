"""`prunekit recover`: distil a dense teacher into a pruned model on a token budget."""

from __future__ import annotations

from prunekit import jobs
from prunekit.commands.common import (
    data_settings,
    drop_default_run_dir,
    load_from_flags,
    print_result,
    recovery_from_flags,
    run_directory,
    run_options,
)
from prunekit.commands.flags import (
    HELDOUT_OPTIONS,
    MODEL_OPTIONS,
    OUTPUT_OPTIONS,
    add_recovery_flags,
    add_tables,
)
from prunekit.methods import RecoveryConfig, describe_stage
from prunekit.models.export import check_output_dir
from prunekit.models.loading import load_model


def cmd_recover(args) -> int:
    distil = args.teacher is not None
    config = recovery_from_flags(args, RecoveryConfig(kd_weight=float(distil), lm_weight=float(not distil)), always=True)
    jobs.check_recovery_request(config, distil, args.recovery_data)
    loaded = load_from_flags(args)
    teacher = load_model(args.teacher, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code) if distil else None
    protected = jobs.input_paths(loaded) + (jobs.input_paths(teacher) if teacher else [])
    check_output_dir(args.out, args.overwrite, protected)
    run = run_directory(args, True)
    job = jobs.recover_job(
        loaded, args.out, config, teacher=teacher, data=data_settings(args), protected=protected, run=run, **run_options(args)
    )
    drop_default_run_dir(args, run)
    summary = job.evaluation["recovery"]
    lines = [
        describe_stage({"method": "recover", "details": summary}),
        f"recovered checkpoint written to {job.out} (log: {job.out / 'prunekit_recovery.json'})",
    ]
    return print_result(args, {"out": str(job.out), "recovery": summary}, lines)


def register(sub) -> None:
    recover = sub.add_parser("recover", help="distil a dense teacher into a pruned model on a token budget")
    add_tables(recover, MODEL_OPTIONS, OUTPUT_OPTIONS, HELDOUT_OPTIONS)
    recover.add_argument("--teacher", help="the dense model to distil from (without one, plain next-token training)")
    add_recovery_flags(recover, run_flags=True)
    sub.choices["recover"].set_defaults(func=cmd_recover)
