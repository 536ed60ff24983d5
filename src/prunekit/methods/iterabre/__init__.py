"""IteRABRe (Wibowo et al., 2025): remove one block at a time, re-scoring the current model, with distillation
recovery after each removal or once at the end.

loop.py: the iterations (score, remove, recover, checkpoint) and resuming them; run_directory.py: the run
directory that keeps each finished iteration; config.py: IterabreConfig; stage.py: how `prune` runs it.
"""

from prunekit.methods.depth.removal import label_removal
from prunekit.methods.iterabre.config import IterabreConfig
from prunekit.methods.iterabre.loop import blocks_next_to, iterabre
from prunekit.methods.iterabre.run_directory import RunDirectory
from prunekit.methods.iterabre.stage import describe_iterabre, run_iterabre
from prunekit.methods.registry import register_method

register_method(
    "iterabre",
    IterabreConfig,
    run_iterabre,
    summary="iterative removal with recovery after each step",
    removes_blocks=True,
    why_not_reapplicable="its weights come from recovery training; keep its checkpoint",
    own_run_directory=True,
    logs_heldout=True,
    describe=describe_iterabre,
    label=label_removal,
)

__all__ = [
    "IterabreConfig",
    "RunDirectory",
    "blocks_next_to",
    "describe_iterabre",
    "iterabre",
    "run_iterabre",
]
