"""Fit a model to a budget (bytes, parameters, decode speed): library, solver, candidates measured against quantizing alone.

targets.py: the budget as typed; library.py: each layer's variants scored alone; costs.py: parameters, GGUF bytes
and decode time of a structure; solver.py: the mixed-integer program; search.py: the whole fit; report.py: the
report and its Pareto plot.
"""

from prunekit.fitting.search import DEFAULT_TYPES, Contender, FitResult, fit
from prunekit.fitting.targets import FitTargets, parse_bytes, parse_params, parse_speedup

__all__ = ["DEFAULT_TYPES", "Contender", "FitResult", "FitTargets", "fit", "parse_bytes", "parse_params", "parse_speedup"]
