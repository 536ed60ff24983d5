"""Outputs for other runtimes: GGUF files that llama.cpp (and ollama, LM Studio, llama-cpp-python) load."""

from prunekit.export.gguf_writer import GGUF_TYPES, QUANTIZER_TYPES, export_gguf

__all__ = ["GGUF_TYPES", "QUANTIZER_TYPES", "export_gguf"]
