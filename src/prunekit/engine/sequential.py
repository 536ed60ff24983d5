"""Sequential calibration engine: run a decoder block by block over calibration batches.

The model's own forward is run once per batch with every block replaced by a recorder, which
captures the embedded input and the exact keyword arguments (attention mask, rotary embeddings,
position ids; per block, so sliding/global layers get their own) that each block would receive.
After that, blocks are executed one at a time over all batches: block k's outputs become block
k+1's inputs. With `offload=True` only the block being run sits on the accelerator; everything
else stays on CPU, so a model far larger than the accelerator can be scanned.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from prunekit.models.adapters import ModelAdapter


class _StopForward(Exception):
    """Raised by the last recorder so nothing after the decoder blocks is computed."""


@dataclass
class BlockInputs:
    """Per-batch hidden states entering one block, plus each block's captured keyword arguments."""

    hidden: list[torch.Tensor]
    block_kwargs: list[list[dict]] = field(default_factory=list)  # [batch][block] -> kwargs


def _first_tensor(output) -> torch.Tensor:
    """Decoder blocks return a tensor in transformers 5 and a tuple in older releases."""
    return output[0] if isinstance(output, (tuple, list)) else output


def _move(value, device: torch.device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_move(v, device) for v in value)
    if isinstance(value, list):
        return [_move(v, device) for v in value]
    if isinstance(value, dict):
        return {k: _move(v, device) for k, v in value.items()}
    return value


def _argument_names(layer: nn.Module) -> list[str]:
    """Names of a block's forward arguments after the hidden states."""
    import inspect

    parameters = list(inspect.signature(type(layer).forward).parameters.values())[2:]
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


class SequentialRunner:
    """Runs a causal LM's decoder blocks one at a time over a fixed set of token windows.

    The runner never changes the model's structure; it reads blocks through the adapter, so a model
    whose blocks were removed is simply a shorter list.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device | None = None,
        offload: bool = False,
        batch_size: int = 1,
        storage_device: str | torch.device | None = None,
        progress: bool = True,
        adapter=None,
    ):
        self.model = model
        self.adapter = adapter if adapter is not None else ModelAdapter(model)  # encoders pass an EncoderAdapter
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.offload = offload
        self.batch_size = max(1, int(batch_size))
        # Where captured hidden states live between blocks; CPU when offloading keeps GPU memory to one block.
        self.storage_device = torch.device(storage_device) if storage_device else (torch.device("cpu") if offload else self.device)
        self.progress = progress
        if offload:
            for module in self.adapter.non_block_modules():
                module.to(self.device)
            for layer in self.adapter.layers:
                layer.to("cpu")

    # -- capture -------------------------------------------------------------------------------
    @torch.no_grad()
    def capture(self, input_ids: torch.Tensor) -> BlockInputs:
        """Embedded inputs of block 0 and every block's keyword arguments, per batch."""
        layers = self.adapter.layers
        hidden: list[torch.Tensor] = []
        block_kwargs: list[list[dict]] = []
        for start in range(0, input_ids.shape[0], self.batch_size):
            batch = input_ids[start : start + self.batch_size].to(self.device)
            recorded: list[dict] = [None] * len(layers)  # type: ignore[list-item]
            first_hidden: list[torch.Tensor] = []

            def make_recorder(index: int, names: list[str]):
                def record(hidden_states, *args, **kwargs):
                    if index == 0:
                        first_hidden.append(hidden_states)
                    # Positional arguments after the hidden states (BERT passes its mask so) become keywords.
                    kwargs = {**dict(zip(names, args)), **kwargs}
                    for key in ("cache", "past_key_values", "past_key_value"):
                        kwargs.pop(key, None)
                    kwargs["use_cache"] = False
                    recorded[index] = kwargs
                    if index == len(layers) - 1:
                        raise _StopForward
                    return hidden_states

                return record

            for index, layer in enumerate(layers):
                layer.forward = make_recorder(index, _argument_names(layer))
            try:
                self.adapter.base(input_ids=batch, use_cache=False)
            except _StopForward:
                pass
            finally:
                for layer in layers:
                    del layer.forward
            hidden.append(first_hidden[0].to(self.storage_device))
            block_kwargs.append(recorded)
        return BlockInputs(hidden, block_kwargs)

    # -- execution -----------------------------------------------------------------------------
    def _enter(self, layer: nn.Module) -> None:
        if self.offload:
            layer.to(self.device)

    def _leave(self, layer: nn.Module) -> None:
        if self.offload:
            layer.to("cpu")

    @contextmanager
    def block_on_device(self, index: int) -> Iterator[nn.Module]:
        """Block `index` on the device for the duration (with offloading it goes back to the CPU after)."""
        layer = self.adapter.layers[index]
        self._enter(layer)
        try:
            yield layer
        finally:
            self._leave(layer)

    def run_block(
        self, index: int, hidden: list[torch.Tensor], block_kwargs: list[list[dict]], kwargs_index: int | None = None
    ) -> list[torch.Tensor]:
        """Outputs of block `index` for every batch; `kwargs_index` picks whose captured kwargs to use."""
        layer = self.adapter.layers[index]
        kwargs_index = index if kwargs_index is None else kwargs_index
        self._enter(layer)
        outputs = []
        with torch.no_grad():
            for batch_hidden, kwargs in zip(hidden, block_kwargs):
                out = _first_tensor(layer(batch_hidden.to(self.device), **kwargs[kwargs_index]))
                outputs.append(out.to(self.storage_device))
        self._leave(layer)
        return outputs

    def iterate(
        self, inputs: BlockInputs, blocks: Iterable[int] | None = None, desc: str | None = None
    ) -> Iterator[tuple[int, list[torch.Tensor], list[torch.Tensor]]]:
        """Yield (block index, inputs, outputs), feeding each block's outputs to the next listed block."""
        order = list(range(self.adapter.num_blocks)) if blocks is None else list(blocks)
        hidden = inputs.hidden
        for index in tqdm(order, desc=desc, disable=not self.progress or desc is None, leave=False):
            outputs = self.run_block(index, hidden, inputs.block_kwargs)
            yield index, hidden, outputs
            hidden = outputs

    def run_blocks(self, inputs: BlockInputs, blocks: Iterable[int]) -> list[torch.Tensor]:
        """Hidden states after running `blocks` in order (the last outputs, or the inputs if none)."""
        hidden = inputs.hidden
        for _, _, hidden in self.iterate(inputs, blocks):
            pass
        return hidden

    @torch.no_grad()
    def final_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """Apply the model's final norm (on the device) to hidden states leaving the last block."""
        return self.adapter.final_norm(hidden.to(self.device))

    @torch.no_grad()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.adapter.logits(self.final_hidden(hidden))
