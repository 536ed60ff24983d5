"""prunekit: structured pruning of LLMs with cheap recovery, exporting plain transformers checkpoints."""

__version__ = "0.1.0"

from prunekit.api import blocks_to_remove, prune  # noqa: E402
from prunekit.data.windows import TokenWindows, load_windows  # noqa: E402
from prunekit.engine import SequentialRunner  # noqa: E402
from prunekit.errors import PrunekitError  # noqa: E402
from prunekit.evaluation import perplexity  # noqa: E402
from prunekit.methods import PrunePlan  # noqa: E402
from prunekit.models import ModelAdapter, load_model, parameter_count, remove_blocks, save_model  # noqa: E402
from prunekit.recovery import RecoveryConfig, recover  # noqa: E402
from prunekit.scoring import scan_blocks  # noqa: E402

__all__ = ["ModelAdapter", "PrunePlan", "PrunekitError", "RecoveryConfig", "recover", "SequentialRunner", "TokenWindows", "blocks_to_remove",
           "load_model", "load_windows", "parameter_count", "perplexity", "prune", "remove_blocks", "save_model",
           "scan_blocks", "__version__"]
