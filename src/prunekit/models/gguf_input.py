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
from dataclasses import dataclass

import torch

from prunekit.errors import PrunekitError
from prunekit.models.adapters import FAMILIES

GGUF_MODEL_TYPES = {"gemma3": "gemma3_text", "deci": "llama"}  # llama.cpp architecture -> transformers model_type, where they differ
_BIAS = re.compile(r"^blk\.\d+\.(?P<part>[a-z_]+)\.bias$")
MLP_PARTS = ("ffn_gate", "ffn_up", "ffn_down")
ATTENTION_PARTS = ("attn_q", "attn_k", "attn_v", "attn_output")


@dataclass(frozen=True)
class GgufHeader:
    """What a GGUF file says before any tensor is read: its model type and the kinds of bias tensors it holds
    (ffn_down, attn_output, ...). Reading it costs seconds (the reader parses every vocabulary entry), so it is
    read once per conversion."""

    architecture: str
    bias_parts: frozenset[str]

    @property
    def model_type(self) -> str:
        return GGUF_MODEL_TYPES.get(self.architecture, self.architecture)


def read_header(gguf_path: str | os.PathLike) -> GgufHeader:
    import gguf

    try:
        reader = gguf.GGUFReader(str(gguf_path))
    except Exception as error:  # noqa: BLE001 - a damaged or foreign file
        raise PrunekitError(f"cannot read GGUF file {gguf_path}: {str(error).splitlines()[0][:200]}") from None
    field = reader.get_field("general.architecture")
    if field is None:
        raise PrunekitError(f"GGUF file {gguf_path} names no architecture (general.architecture); it is not a model file")
    parts = frozenset(match["part"] for tensor in reader.tensors if (match := _BIAS.match(tensor.name)))
    return GgufHeader(bytes(field.parts[field.data[0]]).decode(), parts)


def bias_switches(header: GgufHeader, gguf_path: str | os.PathLike) -> dict[str, bool]:
    """Config switches (mlp_bias, attention_bias) to turn on so that transformers loads every bias the file holds
    (a config read from a GGUF file has them off); a bias the family cannot hold is a one-line refusal."""
    family = FAMILIES.get(header.model_type)
    switches = {}
    for wanted, field in ((MLP_PARTS, family and family.mlp_bias_field), (ATTENTION_PARTS, family and family.attention_bias_field)):
        found = sorted(header.bias_parts & set(wanted))
        if not found or ({"attn_q", "attn_k", "attn_v"} >= set(found) and header.model_type == "qwen2"):
            continue  # nothing to load, or qwen2's q/k/v biases, which it loads without a switch
        if not field:
            raise PrunekitError(
                f"GGUF file {gguf_path} holds {', '.join(found)} biases that transformers' {header.model_type} has no place for; "
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
