"""Channel criteria: the registered ones and one a user adds."""

import pytest
import torch

import prunekit
from prunekit.data.windows import TokenWindows
from prunekit.errors import PrunekitError
from prunekit.scoring import ChannelCriterion, channel_criterion_names, channels, register_channel_criterion

from conftest import VOCAB, tiny_model


def test_a_registered_channel_criterion_prunes_widths(monkeypatch):
    """A user's criterion, in one class, is taken by LIAR as `criterion`, on the FFN and on attention heads."""

    class FirstChannels(ChannelCriterion):  # keep the lowest-numbered channels
        name = "first-channels"

        def score(self, stats, consumer, producers, *, seed, gradients):
            return -torch.arange(consumer.shape[1], dtype=torch.float64)

    monkeypatch.setattr(channels.CHANNEL_CRITERIA, "entries", dict(channels.CHANNEL_CRITERIA.entries))  # gone after the test
    register_channel_criterion(FirstChannels())
    model = tiny_model("llama")
    ids = torch.randint(3, VOCAB, (8, 32), generator=torch.Generator().manual_seed(0))
    windows = TokenWindows(ids, "random", ids.numel())
    result = prunekit.prune(model, prunekit.LiarConfig(ffn_ratio=0.5, criterion="first-channels"), windows, progress=False)
    layers = result.plan.stages[0]["details"]["layers"]
    width = model.config.intermediate_size
    assert all(layer["kept_channels"] == list(range(width // 2)) for layer in layers)


def test_the_known_criteria_and_an_unknown_one():
    assert channel_criterion_names()[:5] == ["magnitude", "wanda", "fluctuation", "taylor", "random"]
    with pytest.raises(PrunekitError, match="criterion 'nope' is unknown; choose one of magnitude, wanda"):
        prunekit.LiarConfig(ffn_ratio=0.5, criterion="nope").check()
