"""prunekit: structured pruning of LLMs with cheap recovery, exporting plain transformers checkpoints."""

from prunekit.api import PruneResult, blocks_to_remove, prune, save  # noqa: E402
from prunekit.data.windows import TokenWindows, load_windows  # noqa: E402
from prunekit.engine import SequentialRunner  # noqa: E402
from prunekit.errors import ParameterError, PrunekitError  # noqa: E402
from prunekit.evaluation import perplexity  # noqa: E402
from prunekit.export import export_gguf  # noqa: E402
from prunekit.methods import (  # noqa: E402
    AngularConfig,
    ExtendConfig,
    FlexiGPTConfig,
    IterabreConfig,
    LiarConfig,
    Plan,
    PrunePlan,
    ShortGPTConfig,
    SLEBConfig,
    method_names,
    register_method,
)
from prunekit.models import ModelAdapter, load_model, parameter_count, remove_blocks, save_model  # noqa: E402
from prunekit.recovery import RecoveryConfig, recover  # noqa: E402
from prunekit.scoring import scan_blocks  # noqa: E402
from prunekit.version import __version__  # noqa: E402

__all__ = [
    "AngularConfig",
    "ExtendConfig",
    "FlexiGPTConfig",
    "IterabreConfig",
    "LiarConfig",
    "ModelAdapter",
    "ParameterError",
    "Plan",
    "PruneResult",
    "PrunePlan",
    "PrunekitError",
    "RecoveryConfig",
    "SLEBConfig",
    "SequentialRunner",
    "ShortGPTConfig",
    "TokenWindows",
    "blocks_to_remove",
    "export_gguf",
    "load_model",
    "load_windows",
    "method_names",
    "parameter_count",
    "perplexity",
    "prune",
    "recover",
    "register_method",
    "remove_blocks",
    "save",
    "save_model",
    "scan_blocks",
    "__version__",
]
