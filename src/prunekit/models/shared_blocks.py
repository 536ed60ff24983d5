"""Weight-shared decoder blocks with their own low-rank adapters (FlexiGPT's replacement blocks).

A replacement block is a structural copy of a decoder block whose every linear layer *borrows* the
weight tensors of another (shared) block's linear layer (the same Parameter, not a copy) and adds
its own LoRA pair B @ A, an own bias delta where the layer has a bias, and, on the attention and
MLP output projections, an output feature normalisation with a learnable per-channel scale.
The block's own small norm weights are kept. peft cannot express a base weight that belongs to
another module, so this part is custom, small and tested.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from prunekit.models.adapters import DecoderFamily, ModelAdapter


class SharedLoRALinear(nn.Module):
    """y = base(x) + scaling * (x @ A^T) @ B^T + bias_delta, with `base` owned by another block."""

    recovery_scope = "adapters"  # the recovery scope under which this module's own parameters train

    def __init__(self, base: nn.Linear, rank: int):
        super().__init__()
        # Stored outside the module tree so the shared weight is registered once, under its owner.
        object.__setattr__(self, "base", base)
        dtype, device = base.weight.dtype, base.weight.device
        self.lora_A = nn.Parameter(torch.zeros(rank, base.in_features, dtype=dtype, device=device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=dtype, device=device))
        self.bias_delta = nn.Parameter(torch.zeros(base.out_features, dtype=dtype, device=device)) if base.bias is not None else None
        self.fused = False  # see fuse_for_inference
        self._fused_cache: tuple[tuple, torch.Tensor, torch.Tensor | None] | None = None

    @property
    def rank(self) -> int:
        return self.lora_A.shape[0]

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        """The effective weight (base + B A); for inspection and merging, not used in forward."""
        return self.base.weight + self.lora_B @ self.lora_A

    def effective_bias(self) -> torch.Tensor | None:
        return None if self.base.bias is None else self.base.bias + self.bias_delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused and not torch.is_grad_enabled():
            weight, bias = self._fused_weight()
            return nn.functional.linear(x, weight, bias)
        out = self.base(x) + (x @ self.lora_A.t()) @ self.lora_B.t()
        return out + self.bias_delta if self.bias_delta is not None else out

    def _versions(self) -> tuple:
        tensors = [self.base.weight, self.lora_A, self.lora_B, self.base.bias, self.bias_delta]
        return tuple((id(t), t._version) if t is not None else None for t in tensors)

    @torch.no_grad()
    def _fused_weight(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """base + B A as one matrix, rebuilt whenever a weight changed since (training in between)."""
        versions = self._versions()
        if self._fused_cache is None or self._fused_cache[0] != versions:
            self._fused_cache = (versions, self.weight.detach(), self.effective_bias())
        return self._fused_cache[1], self._fused_cache[2]

    @torch.no_grad()
    def init_from_difference(self, target: nn.Linear) -> torch.Tensor:
        """LoRA = rank-r truncated SVD of (target - base), so base + B A is its best rank-r fit.

        Returns the singular values of the difference (for reporting what the rank keeps).
        """
        difference = target.weight.double() - self.base.weight.double()
        u, s, vh = torch.linalg.svd(difference, full_matrices=False)
        r = min(self.rank, s.numel())
        self.lora_A.zero_()
        self.lora_B.zero_()
        self.lora_B[:, :r] = (u[:, :r] * s[:r]).to(self.lora_B.dtype)
        self.lora_A[:r] = vh[:r].to(self.lora_A.dtype)
        if self.bias_delta is not None:
            self.bias_delta.copy_(target.bias - self.base.bias if target.bias is not None else -self.base.bias)
        return s


def fuse_for_inference(model: nn.Module, fused: bool = True) -> int:
    """Run every shared linear as one matmul with its effective weight (base + B A) when no gradient is
    taken: decoding then costs what a plain block costs, but each shared linear holds a full weight in
    memory again (the checkpoint on disk stays small). Returns how many linears were switched."""
    linears = [m for m in model.modules() if isinstance(m, SharedLoRALinear)]
    for linear in linears:
        linear.fused = fused
        if not fused:
            linear._fused_cache = None
    return len(linears)


class OutputNorm(nn.Module):
    """scale * x / rms(x) over the hidden channels: tames a replacement sublayer's output.

    With a small initial scale the replacement starts close to a skipped block, which is why
    FlexiGPT's pre-training perplexity stays near ShortGPT's instead of exploding.
    """

    recovery_scope = "adapters"  # the recovery scope under which this module's own parameters train
    learning_rate_option = "norm_scale_learning_rate"  # the recovery setting that gives its scales their own rate

    def __init__(self, width: int, init_scale: float, eps: float = 1e-6, dtype=None, device=None):
        super().__init__()
        self.scale = nn.Parameter(torch.full((width,), float(init_scale), dtype=dtype, device=device))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * torch.rsqrt(variance + self.eps)).to(x.dtype) * self.scale


class NormalizedOutput(nn.Module):
    """A sublayer's output projection followed by `OutputNorm`."""

    def __init__(self, projection: SharedLoRALinear, norm: OutputNorm):
        super().__init__()
        self.projection, self.norm = projection, norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.projection(x))


def linear_paths(family: DecoderFamily) -> list[tuple[str, str, bool]]:
    """(sublayer attr, projection attr, is the sublayer's output projection) for every linear."""
    paths = [(family.attention_attr, name, name == family.attention_projections[-1]) for name in family.attention_projections]
    return paths + [(family.mlp_attr, name, name == family.mlp_projections[-1]) for name in family.mlp_projections]


def build_shared_block(
    template: nn.Module, shared: nn.Module, family: DecoderFamily, *, rank: int, output_norm: float | None, layer_idx: int
) -> nn.Module:
    """A block shaped like `template` (its norms are copied) whose linears borrow `shared`'s weights.

    The LoRA pairs start at zero; call `init_from_difference` to make them approximate `template`.
    `output_norm` is the initial scale of the output normalisation, or None to leave it out.
    """
    block = copy.deepcopy(template)
    for sublayer_attr, name, is_output in linear_paths(family):
        sublayer = getattr(block, sublayer_attr)
        base = getattr(getattr(shared, sublayer_attr), name)
        replacement = SharedLoRALinear(base, rank)
        if is_output and output_norm is not None:
            norm = OutputNorm(base.out_features, output_norm, dtype=base.weight.dtype, device=base.weight.device)
            replacement = NormalizedOutput(replacement, norm)
        setattr(sublayer, name, replacement)
    for module in block.modules():
        if hasattr(module, "layer_idx"):
            module.layer_idx = layer_idx
    return block


def shared_linears(block: nn.Module) -> list[SharedLoRALinear]:
    return [m for m in block.modules() if isinstance(m, SharedLoRALinear)]


def is_shared_block(block: nn.Module) -> bool:
    return any(isinstance(m, SharedLoRALinear) for m in block.modules())


def shared_structure(model) -> list[dict]:
    """Per shared block: where it sits, which block it borrows from, rank and output-norm setting."""
    adapter = ModelAdapter(model)
    owners = {}
    for position, layer in enumerate(adapter.layers):
        if not is_shared_block(layer):
            for module in layer.modules():
                owners[id(module)] = position
    structure = []
    for position, layer in enumerate(adapter.layers):
        if is_shared_block(layer):
            linears = shared_linears(layer)
            norms = [m for m in layer.modules() if type(m).__name__ == "OutputNorm"]
            structure.append(
                {
                    "position": position,
                    "shares_with": owners[id(linears[0].base)],
                    "rank": linears[0].rank,
                    "output_norm": float(norms[0].scale.detach().float().mean()) if norms else None,
                }
            )
    return structure
