"""Outputs for other runtimes: GGUF files that llama.cpp (and ollama, LM Studio, llama-cpp-python) load, and DeciLM
checkpoints, the form in which vLLM serves per-layer widths."""

from prunekit.export.decilm import export_decilm
from prunekit.export.gguf_writer import GGUF_TYPES, QUANTIZER_TYPES, export_gguf

__all__ = ["GGUF_TYPES", "QUANTIZER_TYPES", "export_decilm", "export_gguf"]
