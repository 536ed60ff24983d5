"""Evaluation of dense and pruned models: perplexity and throughput."""

from prunekit.evaluation.perplexity import PerplexityResult, perplexity

__all__ = ["PerplexityResult", "perplexity"]
