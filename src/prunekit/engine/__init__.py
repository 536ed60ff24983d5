"""The sequential (block-by-block) calibration engine that scans and width methods run on."""

from prunekit.engine.sequential import BlockInputs, SequentialRunner

__all__ = ["BlockInputs", "SequentialRunner"]
