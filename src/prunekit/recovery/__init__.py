"""Recovery training after pruning: knowledge distillation from the dense teacher on a token budget."""

from prunekit.recovery.config import RecoveryConfig
from prunekit.recovery.data import recovery_windows, self_generated_windows
from prunekit.recovery.trainer import RecoveryDiverged, RecoveryResult, dense_teacher, recover

__all__ = ["RecoveryConfig", "RecoveryDiverged", "RecoveryResult", "dense_teacher", "recover", "recovery_windows", "self_generated_windows"]
