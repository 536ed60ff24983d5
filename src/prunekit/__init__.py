"""prunekit: structured pruning of LLMs with cheap recovery, exporting plain transformers checkpoints.

The public names are imported when first used (PEP 562), so `import prunekit` and the command line's
start-up do not load torch, transformers and every method before they are needed."""

from __future__ import annotations

import importlib

from prunekit.version import __version__

_PUBLIC = {
    "AngularConfig": "prunekit.methods",
    "blocks_to_remove": "prunekit.api",
    "export_gguf": "prunekit.export",
    "fit": "prunekit.fitting",
    "FitTargets": "prunekit.fitting",
    "export_decilm": "prunekit.export",
    "ExtendConfig": "prunekit.methods",
    "FlexiGPTConfig": "prunekit.methods",
    "IterabreConfig": "prunekit.methods",
    "LiarConfig": "prunekit.methods",
    "load_model": "prunekit.models",
    "load_windows": "prunekit.data.windows",
    "method_names": "prunekit.methods",
    "ModelAdapter": "prunekit.models",
    "parameter_count": "prunekit.models",
    "ParameterError": "prunekit.errors",
    "perplexity": "prunekit.evaluation",
    "Plan": "prunekit.methods",
    "prune": "prunekit.api",
    "PrunekitError": "prunekit.errors",
    "ComputationError": "prunekit.errors",
    "PrunePlan": "prunekit.methods",
    "PruneResult": "prunekit.api",
    "recover": "prunekit.recovery",
    "RecoveryConfig": "prunekit.recovery",
    "register_method": "prunekit.methods",
    "remove_blocks": "prunekit.models",
    "save": "prunekit.api",
    "save_model": "prunekit.models",
    "scan_blocks": "prunekit.scoring",
    "SequentialRunner": "prunekit.engine",
    "ShortGPTConfig": "prunekit.methods",
    "SLEBConfig": "prunekit.methods",
    "TokenWindows": "prunekit.data.windows",
}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'prunekit' has no attribute '{name}'")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
