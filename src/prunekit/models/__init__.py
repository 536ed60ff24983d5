"""Loading, family adapters, structural surgery and export."""

from prunekit.models.adapters import FAMILIES, ModelAdapter, parameter_count, supported_model_types
from prunekit.models.export import save_model
from prunekit.models.loading import LoadedModel, load_model
from prunekit.models.surgery import remove_blocks

__all__ = [
    "FAMILIES",
    "LoadedModel",
    "ModelAdapter",
    "load_model",
    "parameter_count",
    "remove_blocks",
    "save_model",
    "supported_model_types",
]
