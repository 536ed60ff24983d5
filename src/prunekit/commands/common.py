"""What every command does the same way: read its flags into settings, load the model, print the result."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from prunekit import jobs
from prunekit.commands.flags import (
    RECOVERY,
)
from prunekit.methods import RecoveryConfig
from prunekit.models.loading import resolve_device
from prunekit.options import config_options
from prunekit.recovery.distributed import on_main_process


def run_directory(args, trains: bool) -> dict:
    """The job's training checkpoints: --run-dir (default OUT.run) for every stage that trains."""
    if not trains:
        return {}
    run_dir = getattr(args, "run_dir", None) or f"{Path(args.out).expanduser()}.run"
    overwrite = args.overwrite or getattr(args, "overwrite_run", False)
    return {"run_dir": run_dir, "resume": getattr(args, "resume", False), "save_every": args.save_every, "overwrite_run": overwrite}


def drop_default_run_dir(args, run: dict) -> None:
    """A finished run's directory holds only its settings; the default one beside the output goes."""
    if run and not getattr(args, "run_dir", None):
        on_main_process(lambda: shutil.rmtree(run["run_dir"], ignore_errors=True))


def recovery_from_flags(args, base: RecoveryConfig | None, always: bool = False) -> RecoveryConfig | None:
    """The method's recovery default with the recovery flags given; --recovery-tokens 0 means none."""
    given = config_options(args, RecoveryConfig, RECOVERY)
    if given.get("tokens") == 0:
        return None
    if not given and not always:
        return base
    return dataclasses.replace(base or RecoveryConfig(), **given, seed=args.seed)


def load_from_flags(args, out: bool = True):
    settings = {name: getattr(args, name) for name in ("overwrite", "device", "dtype", "trust_remote_code", "offload")}
    return jobs.load_checked(args.model, out=args.out if out else None, progress=not args.quiet, **settings)


def run_options(args) -> dict:
    return {"device": resolve_device(args.device), "progress": not args.quiet, "overwrite": args.overwrite}


def print_result(args, payload: dict, lines: list[str]) -> int:
    print(json.dumps(payload, indent=2) if args.json else "\n".join(lines))
    return 0


def data_settings(args) -> jobs.DataSettings:
    names = ("data", "windows", "seq_len", "heldout_data", "heldout_windows", "recovery_data", "text_field", "seed")
    return jobs.DataSettings(**{name: getattr(args, name) for name in names if hasattr(args, name)})


def shown(path) -> str:
    """A path as the user would type it: relative to the working directory when it is inside it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def local_inputs(*specs: str | None) -> list[str]:
    """The specs that name files or directories here (an output may not lie on, in or over them)."""
    return [spec for spec in specs if spec and Path(spec).expanduser().exists()]
