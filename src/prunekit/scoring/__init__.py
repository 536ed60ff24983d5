"""Importance scores for blocks (depth) and, later, heads and channels (width)."""

from prunekit.scoring.blocks import METRICS, BlockScores, scan_blocks

__all__ = ["METRICS", "BlockScores", "scan_blocks"]
