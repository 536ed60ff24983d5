"""What a fitted structure costs: parameters (exact), GGUF bytes (predicted per tensor) and decode time (a model).

Parameters follow from the widths alone. GGUF bytes are predicted tensor by tensor: each tensor keeps the
type llama.cpp's quantizer gave the same tensor of the dense model at that type (read from the dense file),
and a row that no longer splits into that type's blocks takes the type llama.cpp falls back to. The quantizer
chooses some types by a layer's position (q4_k_m gives some layers q6_k), so after blocks are dropped a
prediction can be off by a few tensors' worth: every chosen file is measured, and one over its budget is
refused. Decode time on a CPU follows the bytes each token reads and the number of layers it runs:
time / dense time = 1 - b (1 - bytes / dense bytes) - c (1 - layers / dense layers), with b and c measured in
llama.cpp on two probe files (half the layers; half the FFN channels) on the machine the fit runs on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import gguf

from prunekit.fitting.library import ModelShape

Q = gguf.GGMLQuantizationType
ALIGNMENT = 32  # GGUF's default tensor data alignment
# llama.cpp's quantizer, for a row that does not split into the chosen type's blocks (llama-quant.cpp)
FALLBACK = {Q.Q2_K: Q.IQ4_NL, Q.Q3_K: Q.IQ4_NL, Q.IQ4_XS: Q.IQ4_NL, Q.Q4_K: Q.Q5_0, Q.Q5_K: Q.Q5_1, Q.Q6_K: Q.Q8_0}
BLOCK_KINDS = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")


@dataclass(frozen=True)
class LayerChoice:
    """What one layer of the dense model becomes: dropped, or kept with these KV groups and FFN channels."""

    kv_groups: int
    channels: int

    @property
    def dropped(self) -> bool:
        return self.kv_groups == 0


DROPPED = LayerChoice(0, 0)


@dataclass
class Structure:
    """A whole model's choice, one entry per dense layer."""

    layers: list[LayerChoice]

    @property
    def kept(self) -> list[int]:
        return [i for i, layer in enumerate(self.layers) if not layer.dropped]

    @property
    def dropped(self) -> list[int]:
        return [i for i, layer in enumerate(self.layers) if layer.dropped]

    def narrows(self, shape: ModelShape) -> tuple[bool, bool]:
        """(any kept layer narrows its heads, any kept layer narrows its FFN)."""
        kept = [self.layers[i] for i in self.kept]
        return any(c.kv_groups < shape.num_kv for c in kept), any(c.channels < shape.width for c in kept)

    def key(self) -> tuple:
        return tuple((c.kv_groups, c.channels) for c in self.layers)

    def describe(self, shape: ModelShape) -> str:
        parts = []
        if self.dropped:
            parts.append(f"drops blocks {self.dropped}")
        narrowed = [(i, self.layers[i]) for i in self.kept if self.layers[i] != LayerChoice(shape.num_kv, shape.width)]
        if narrowed:
            channels = sum(c.channels for c in (self.layers[i] for i in self.kept))
            parts.append(
                f"narrows {len(narrowed)} layers (FFN channels kept {channels / (len(self.kept) * shape.width):.0%}, "
                f"KV groups kept {sum(self.layers[i].kv_groups for i in self.kept)}/{len(self.kept) * shape.num_kv})"
            )
        return "; ".join(parts) or "dense"


def dense_structure(shape: ModelShape) -> Structure:
    return Structure([LayerChoice(shape.num_kv, shape.width)] * shape.num_layers)


def attention_params(shape: ModelShape, kv: int, bias: bool) -> int:
    query = kv * shape.group_size * shape.head_dim
    weights = 2 * shape.hidden * query + 2 * shape.hidden * kv * shape.head_dim
    return weights + ((query + 2 * kv * shape.head_dim + shape.hidden) if bias else 0)  # attention_bias: q, k, v and o


def ffn_params(shape: ModelShape, channels: int, bias: bool) -> int:
    return 3 * shape.hidden * channels + ((2 * channels + shape.hidden) if bias else 0)  # mlp_bias: gate, up and down


def structure_params(shape: ModelShape, structure: Structure, reconstruction: str = "liar") -> int:
    """Exact parameters of the assembled model (LIAR turns a family's bias switch on for every layer)."""
    heads, ffn = structure.narrows(shape)
    with_bias = reconstruction in ("liar", "bias")
    attn_bias = heads and with_bias and shape.attention_bias_field
    mlp_bias = ffn and with_bias and shape.mlp_bias_field
    total = shape.vocab * shape.hidden * (1 if shape.tied else 2) + shape.hidden
    for i in structure.kept:
        choice = structure.layers[i]
        total += 2 * shape.hidden + attention_params(shape, choice.kv_groups, attn_bias) + ffn_params(shape, choice.channels, mlp_bias)
    return total


def _row_type(kind: Q, ne0: int) -> Q:
    while ne0 % gguf.GGML_QUANT_SIZES[kind][0]:
        kind = FALLBACK.get(kind, Q.F16)
        if kind == Q.F16:
            break
    return kind


def tensor_info_bytes(name: str, dims: int) -> int:
    """A tensor's entry in the file's header: its name, shape, type and offset."""
    return 8 + len(name.encode()) + 4 + 8 * dims + 4 + 8


def tensor_bytes(kind: Q, ne0: int, ne1: int = 1, name: str = "blk.0.attn_q.weight") -> int:
    """The bytes a tensor adds to the file: its aligned data and its header entry."""
    kind = _row_type(kind, ne0)
    block, size = gguf.GGML_QUANT_SIZES[kind]
    raw = ne0 // block * size * ne1
    return -(-raw // ALIGNMENT) * ALIGNMENT + tensor_info_bytes(name, 1 if ne1 == 1 else 2)


@dataclass
class GgufTypes:
    """The dense model's file at one type: each tensor's ggml type, the bytes outside the layers, the file size."""

    gguf_type: str
    block_types: dict[str, list[int]]  # kind -> ggml type of that tensor in each dense layer
    other_bytes: int  # token embedding, output, norms, header and vocabulary
    dense_bytes: int

    @classmethod
    def read(cls, path: str | Path, gguf_type: str, num_layers: int) -> "GgufTypes":
        reader = gguf.GGUFReader(str(path))
        types: dict[str, list[int]] = {kind: [int(Q.F32)] * num_layers for kind in BLOCK_KINDS}
        block_total = 0
        for tensor in reader.tensors:
            parts = tensor.name.split(".")
            if parts[0] == "blk" and parts[2] in types and parts[-1] == "weight":
                types[parts[2]][int(parts[1])] = int(tensor.tensor_type)
            if parts[0] == "blk":
                dims = len([d for d in tensor.shape if d > 0])
                block_total += -(-int(tensor.n_bytes) // ALIGNMENT) * ALIGNMENT + tensor_info_bytes(tensor.name, dims)
        size = Path(path).stat().st_size
        return cls(gguf_type, types, size - block_total, size)

    def layer_bytes(self, shape: ModelShape, index: int, choice: LayerChoice, attn_bias: bool, mlp_bias: bool) -> int:
        """Bytes of dense layer `index` written with `choice` (0 when dropped)."""
        if choice.dropped:
            return 0
        return self.attention_bytes(shape, index, choice.kv_groups, attn_bias) + self.ffn_bytes(shape, index, choice.channels, mlp_bias)

    def attention_bytes(self, shape: ModelShape, index: int, kv: int, bias: bool) -> int:
        t = {kind: Q(values[index]) for kind, values in self.block_types.items()}
        query, kv_rows, hidden = kv * shape.group_size * shape.head_dim, kv * shape.head_dim, shape.hidden
        n = f"blk.{index}."  # the name's length as written: the layer's index in the dense model (the same digits nearly always)
        return (
            tensor_bytes(Q.F32, hidden, 1, n + "attn_norm.weight")
            + tensor_bytes(t["attn_q"], hidden, query, n + "attn_q.weight")
            + tensor_bytes(t["attn_k"], hidden, kv_rows, n + "attn_k.weight")
            + tensor_bytes(t["attn_v"], hidden, kv_rows, n + "attn_v.weight")
            + tensor_bytes(t["attn_output"], query, hidden, n + "attn_output.weight")
            + (tensor_bytes(Q.F32, hidden, 1, n + "attn_output.bias") if bias else 0)
        )

    def ffn_bytes(self, shape: ModelShape, index: int, channels: int, bias: bool) -> int:
        t = {kind: Q(values[index]) for kind, values in self.block_types.items()}
        hidden, n = shape.hidden, f"blk.{index}."
        return (
            tensor_bytes(Q.F32, hidden, 1, n + "ffn_norm.weight")
            + tensor_bytes(t["ffn_gate"], hidden, channels, n + "ffn_gate.weight")
            + tensor_bytes(t["ffn_up"], hidden, channels, n + "ffn_up.weight")
            + tensor_bytes(t["ffn_down"], channels, hidden, n + "ffn_down.weight")
            + (tensor_bytes(Q.F32, hidden, 1, n + "ffn_down.bias") if bias else 0)
        )

    def structure_bytes(self, shape: ModelShape, structure: Structure, reconstruction: str = "liar") -> int:
        """Predicted file size: a bias is written only in a layer LIAR narrowed (a zero bias is left out)."""
        with_bias = reconstruction in ("liar", "bias")
        total = self.other_bytes
        for i in structure.kept:
            c = structure.layers[i]
            attn_bias = with_bias and shape.attention_bias_field and c.kv_groups < shape.num_kv
            mlp_bias = with_bias and shape.mlp_bias_field and c.channels < shape.width
            total += self.layer_bytes(shape, i, c, attn_bias, mlp_bias)
        return total

    def block_bytes(self, shape: ModelShape, structure: Structure) -> int:
        """Bytes a decoded token reads from the layers (the model's matrices, the embedding row aside)."""
        return self.structure_bytes(shape, structure) - self.other_bytes


@dataclass
class LatencyModel:
    """Decode time relative to the dense model at the same type, from the layers' bytes and count."""

    bytes_share: float  # b
    layers_share: float  # c
    probes: dict = field(default_factory=dict)  # what was measured to fit b and c

    def relative_time(self, byte_fraction: float, layer_fraction: float) -> float:
        return 1.0 - self.bytes_share * (1.0 - byte_fraction) - self.layers_share * (1.0 - layer_fraction)

    @classmethod
    def fit(
        cls,
        dense_tps: float,
        depth_tps: float,
        depth_fractions: tuple[float, float],
        width_tps: float,
        width_fractions: tuple[float, float],
    ) -> "LatencyModel":
        """b and c from two probes: (bytes fraction, layers fraction) and tokens/s of each, against the dense tokens/s."""
        t_depth, t_width = dense_tps / depth_tps, dense_tps / width_tps
        (bd, ld), (bw, lw) = depth_fractions, width_fractions
        # 1 - t = b (1 - bytes) + c (1 - layers), for both probes
        a11, a12, r1 = 1 - bd, 1 - ld, 1 - t_depth
        a21, a22, r2 = 1 - bw, 1 - lw, 1 - t_width
        det = a11 * a22 - a12 * a21
        b = (r1 * a22 - a12 * r2) / det
        c = (a11 * r2 - r1 * a21) / det
        probes = {
            "dense_tps": dense_tps,
            "depth_tps": depth_tps,
            "depth_fractions": depth_fractions,
            "width_tps": width_tps,
            "width_fractions": width_fractions,
        }
        return cls(max(0.0, b), max(0.0, c), probes)

    def to_dict(self) -> dict:
        return asdict(self)
