"""LIAR: width pruning of attention heads and FFN channels, the pruned channels' contribution folded into the
consuming layer by least squares (no training).

config.py: LiarConfig and its checks; stage.py: the registered method (run_liar, how a stage is described); decoder.py: prune_width on
decoder models; encoder.py: the same for BERT-style encoders; reconstruction.py: the least-squares fold and its
damping; allocation.py: uniform or adaptive per-layer widths.
"""

from prunekit.methods.liar.decoder import prune_width
from prunekit.methods.liar.encoder import prune_encoder_width
from prunekit.methods.liar.stage import LiarConfig, describe_liar, label_liar, run_liar
from prunekit.methods.registry import register_method

register_method(
    "liar",
    LiarConfig,
    run_liar,
    summary="width pruning with least-squares reconstruction",
    why_not_reapplicable="its reconstruction is computed from calibration data, so run it again with the same settings and seed",
    rerun_from_plan=True,
    calibration_windows=64,
    describe=describe_liar,
    label=label_liar,
)

__all__ = ["LiarConfig", "describe_liar", "label_liar", "prune_encoder_width", "prune_width", "run_liar"]
