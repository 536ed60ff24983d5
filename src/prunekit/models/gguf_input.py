"""Reading a GGUF file as a transformers model without losing what transformers' reader leaves out.

transformers maps a GGUF tensor only onto a parameter its config declares, and skips the rest without a
word: a pruned Llama whose width compensation added FFN-down or attention-output biases (LIAR) would load
as another model. Here the file's bias tensors are listed first; the family's bias switches are turned on
for those the config lacks, so they load, and the biases the file does not hold (the gate and up
projections') start at zero. A bias the family has no switch for is refused.
"""

from __future__ import annotations

import os
import re

import torch

from prunekit.errors import PrunekitError
from prunekit.models.adapters import FAMILIES

GGUF_MODEL_TYPES = {"gemma3": "gemma3_text", "deci": "llama"}  # llama.cpp architecture -> transformers model_type, where they differ
_BIAS = re.compile(r"^blk\.\d+\.(?P<part>[a-z_]+)\.bias$")
MLP_PARTS = ("ffn_gate", "ffn_up", "ffn_down")
ATTENTION_PARTS = ("attn_q", "attn_k", "attn_v", "attn_output")


def _reader(gguf_path: str | os.PathLike):
    import gguf

    try:
        return gguf.GGUFReader(str(gguf_path))
    except Exception as error:  # noqa: BLE001 - a damaged or foreign file
        raise PrunekitError(f"cannot read GGUF file {gguf_path}: {str(error).splitlines()[0][:200]}") from None


def gguf_architecture(gguf_path: str | os.PathLike) -> str:
    """general.architecture from a GGUF file's header (no tensor is read)."""
    field = _reader(gguf_path).get_field("general.architecture")
    if field is None:
        raise PrunekitError(f"GGUF file {gguf_path} names no architecture (general.architecture); it is not a model file")
    return bytes(field.parts[field.data[0]]).decode()


def gguf_model_type(gguf_path: str | os.PathLike) -> str:
    architecture = gguf_architecture(gguf_path)
    return GGUF_MODEL_TYPES.get(architecture, architecture)


def bias_parts(gguf_path: str | os.PathLike) -> set[str]:
    """The kinds of bias tensors the file holds (ffn_down, attn_output, ...)."""
    return {match["part"] for tensor in _reader(gguf_path).tensors if (match := _BIAS.match(tensor.name))}


def bias_switches(gguf_path: str | os.PathLike, config) -> dict[str, bool]:
    """Config switches (mlp_bias, attention_bias) to turn on so that transformers loads every bias the file holds;
    a bias the family cannot hold is a one-line refusal."""
    parts = bias_parts(gguf_path)
    family = FAMILIES.get(getattr(config, "model_type", None))
    switches = {}
    for wanted, field in ((MLP_PARTS, family and family.mlp_bias_field), (ATTENTION_PARTS, family and family.attention_bias_field)):
        found = sorted(parts & set(wanted))
        if not found or (field and getattr(config, field, False)):
            continue
        native_qkv = {"attn_q", "attn_k", "attn_v"} >= set(found) and getattr(config, "model_type", "") == "qwen2"
        if native_qkv:  # qwen2 loads its q/k/v biases without a switch
            continue
        if not field:
            raise PrunekitError(
                f"GGUF file {gguf_path} holds {', '.join(found)} biases that transformers' {config.model_type} has no place for; "
                "loading it would compute another model: load the checkpoint it was exported from"
            )
        switches[field] = True
    return switches


def zero_missing_biases(model, missing: list[str], spec: str) -> None:
    """Biases the switches added but the file does not hold (e.g. gate and up, when only down carries LIAR's
    compensation) are zero, as they were in the model that was exported; any other missing weight is refused."""
    others = [name for name in missing if not name.endswith(".bias")]
    if others:
        raise PrunekitError(f"GGUF file {spec} lacks {len(others)} weight(s) its model needs (e.g. {', '.join(others[:3])})")
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name in missing:
            parameters[name].zero_()
