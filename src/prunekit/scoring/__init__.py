"""Importance scores: block metrics (depth) and channel criteria (width), each registered by name."""

from prunekit.scoring.blocks import (
    BlockMetric,
    BlockScores,
    CapturedBlockMetric,
    block_metric,
    block_metric_names,
    register_block_metric,
    scan_blocks,
)
from prunekit.scoring.channels import ChannelCriterion, channel_criterion, channel_criterion_names, register_channel_criterion

__all__ = [
    "BlockMetric",
    "BlockScores",
    "CapturedBlockMetric",
    "ChannelCriterion",
    "block_metric",
    "block_metric_names",
    "channel_criterion",
    "channel_criterion_names",
    "register_block_metric",
    "register_channel_criterion",
    "scan_blocks",
]
