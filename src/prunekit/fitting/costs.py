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
BLOCK_KINDS = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_qkv", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")
QK_NORMS = ("qwen3", "gemma3")  # architectures with a norm on each head's query and key
FUSED = ("phi3",)  # one QKV matrix and one gate-and-up matrix


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
        total += shape.norms + attention_params(shape, choice.kv_groups, attn_bias) + ffn_params(shape, choice.channels, mlp_bias)
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


def tensor_bytes(kind: Q, ne0: int, ne1: int = 1) -> int:
    """A tensor's data in the file, aligned: rows of `ne0` values in `kind` (or the type it falls back to)."""
    kind = _row_type(kind, ne0)
    block, size = gguf.GGML_QUANT_SIZES[kind]
    raw = ne0 // block * size * ne1
    return -(-raw // ALIGNMENT) * ALIGNMENT


def _aligned(count: int) -> int:
    return -(-count // ALIGNMENT) * ALIGNMENT


PER_LAYER_KEYS = 3  # deci writes the FFN width and both head counts as one array each


@dataclass
class GgufTypes:
    """The dense model's file at one type, read once: each block tensor's ggml type per layer, the data outside
    the layers, and the header (metadata and tensor entries) without the layers' entries."""

    gguf_type: str
    block_types: dict[str, list[int]]  # kind -> ggml type of that tensor in each dense layer
    other_bytes: int  # aligned data of the tensors outside the layers (embedding, output, final norm)
    header_bytes: int  # the header's length before its padding, the layers' tensor entries left out
    architecture: str  # as the dense file names it (its keys carry it as their prefix)
    architecture_keys: int  # keys with that prefix, plus the general.architecture value
    name_length: int  # bytes of general.name in the dense file
    dense_bytes: int

    @classmethod
    def read(cls, path: str | Path, gguf_type: str, num_layers: int) -> "GgufTypes":
        reader = gguf.GGUFReader(str(path))
        types: dict[str, list[int]] = {kind: [int(Q.F32)] * num_layers for kind in BLOCK_KINDS}
        other, block_entries = 0, 0
        for tensor in reader.tensors:
            parts = tensor.name.split(".")
            if parts[0] == "blk":
                if parts[2] in types and parts[-1] == "weight":
                    types[parts[2]][int(parts[1])] = int(tensor.tensor_type)
                block_entries += tensor_info_bytes(tensor.name, len(tensor.shape))
            else:
                other += _aligned(int(tensor.n_bytes))
        last = reader.tensors[-1].field
        header = last.offset + sum(part.nbytes for part in last.parts)
        architecture = str(bytes(reader.fields["general.architecture"].parts[-1]), "utf-8")
        keys = sum(name.startswith(architecture + ".") for name in reader.fields) + 1
        name = reader.fields.get("general.name")
        name_length = len(bytes(name.parts[-1])) if name is not None else 0
        return cls(gguf_type, types, other, header - block_entries, architecture, keys, name_length, Path(path).stat().st_size)

    def _types(self, index: int) -> dict[str, Q]:
        return {kind: Q(values[index]) for kind, values in self.block_types.items()}

    def _attention_tensors(self, shape: ModelShape, index: int, kv: int, bias: bool) -> list[tuple[str, Q, int, int]]:
        t, hidden = self._types(index), shape.hidden
        query, kv_rows = kv * shape.group_size * shape.head_dim, kv * shape.head_dim
        out = [("attn_norm.weight", Q.F32, hidden, 1)]
        if self.architecture in FUSED:
            out.append(("attn_qkv.weight", t["attn_qkv"], hidden, query + 2 * kv_rows))
        else:
            out += [
                ("attn_q.weight", t["attn_q"], hidden, query),
                ("attn_k.weight", t["attn_k"], hidden, kv_rows),
                ("attn_v.weight", t["attn_v"], hidden, kv_rows),
            ]
        if self.architecture in QK_NORMS:
            out += [("attn_q_norm.weight", Q.F32, shape.head_dim, 1), ("attn_k_norm.weight", Q.F32, shape.head_dim, 1)]
        out.append(("attn_output.weight", t["attn_output"], query, hidden))
        if self.architecture == "gemma3":
            out.append(("post_attention_norm.weight", Q.F32, hidden, 1))
        return out + ([("attn_output.bias", Q.F32, hidden, 1)] if bias else [])

    def _ffn_tensors(self, shape: ModelShape, index: int, channels: int, bias: bool) -> list[tuple[str, Q, int, int]]:
        t, hidden = self._types(index), shape.hidden
        out = [("ffn_norm.weight", Q.F32, hidden, 1)]
        if self.architecture in FUSED:
            out.append(("ffn_up.weight", t["ffn_up"], hidden, 2 * channels))
        else:
            out += [("ffn_gate.weight", t["ffn_gate"], hidden, channels), ("ffn_up.weight", t["ffn_up"], hidden, channels)]
        out.append(("ffn_down.weight", t["ffn_down"], channels, hidden))
        if self.architecture == "gemma3":
            out.append(("post_ffw_norm.weight", Q.F32, hidden, 1))
        return out + ([("ffn_down.bias", Q.F32, hidden, 1)] if bias else [])

    @staticmethod
    def _sized(tensors, written_index: int) -> tuple[int, int]:
        """(aligned data, header entries) of a layer's tensors written as layer `written_index`."""
        data = sum(tensor_bytes(kind, ne0, ne1) for _, kind, ne0, ne1 in tensors)
        entries = sum(tensor_info_bytes(f"blk.{written_index}.{name}", 1 if ne1 == 1 else 2) for name, _, _, ne1 in tensors)
        return data, entries

    def attention_bytes(self, shape: ModelShape, index: int, kv: int, bias: bool) -> int:
        """Data, header entries and per-layer header values of a layer's attention, as the solver adds them up."""
        data, entries = self._sized(self._attention_tensors(shape, index, kv, bias), index)
        return data + entries + 4 * PER_LAYER_KEYS

    def ffn_bytes(self, shape: ModelShape, index: int, channels: int, bias: bool) -> int:
        return sum(self._sized(self._ffn_tensors(shape, index, channels, bias), index))

    def fixed_bytes(self) -> int:
        """What the solver adds to the layers' bytes: the rest of the file, with room for the per-layer header's
        own keys and the header's padding (a bound: every built file is measured)."""
        return self.other_bytes + self.header_bytes + PER_LAYER_KEYS * 8 + 2 * ALIGNMENT

    def structure_bytes(self, shape: ModelShape, structure: Structure, reconstruction: str = "liar", name: str | None = None) -> int:
        """The file's size, written by prunekit with `name` as its general.name: the layers' tensors under their new
        indices (a bias only where LIAR narrowed: a zero bias is left out), the header of a per-layer (`deci`) or
        uniform file, padded to the alignment."""
        with_bias = reconstruction in ("liar", "bias")
        data, entries = 0, 0
        for written, i in enumerate(structure.kept):
            c = structure.layers[i]
            attn_bias = with_bias and shape.attention_bias_field and c.kv_groups < shape.num_kv
            mlp_bias = with_bias and shape.mlp_bias_field and c.channels < shape.width
            tensors = self._attention_tensors(shape, i, c.kv_groups, attn_bias) + self._ffn_tensors(shape, i, c.channels, mlp_bias)
            layer_data, layer_entries = self._sized(tensors, written)
            data, entries = data + layer_data, entries + layer_entries
        header = self.header_bytes + entries + (len(name.encode()) - self.name_length if name is not None else 0)
        kept = [structure.layers[i] for i in structure.kept]
        if len(set(kept)) > 1 and self.architecture != "deci":  # per-layer widths: written as deci, with arrays
            header -= (len(self.architecture) - len("deci")) * self.architecture_keys
            header += PER_LAYER_KEYS * (8 + 4 * len(kept))  # an array (type, count, values) in place of one value
        if self.architecture == "gemma3":  # one sliding-window flag (a byte) per written layer
            header += len(kept) - shape.num_layers
        return _aligned(header) + self.other_bytes + data

    def block_bytes(self, shape: ModelShape, structure: Structure) -> int:
        """Bytes a decoded token reads from the layers' matrices."""
        total = 0
        for i in structure.kept:
            c = structure.layers[i]
            tensors = self._attention_tensors(shape, i, c.kv_groups, False) + self._ffn_tensors(shape, i, c.channels, False)
            total += self._sized(tensors, i)[0]
        return total


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
