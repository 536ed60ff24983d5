"""Structures chosen elsewhere, applied as given: listed blocks removed without data, LIAR's listed per-layer widths."""

import pytest
import torch

import prunekit
from prunekit.data.windows import TokenWindows
from prunekit.errors import ParameterError

from conftest import tiny_model


def windows():
    torch.manual_seed(0)
    ids = torch.randint(3, 200, (8, 32))
    return TokenWindows(ids, "random", ids.numel())


def test_listed_blocks_and_widths():
    recipe = [
        {"method": "blocks", "blocks": [2]},
        {"method": "liar", "allocation": "listed", "channels": [100, 64, 128], "kv_groups": [1, 2, 2]},
    ]
    result = prunekit.prune(tiny_model("llama"), recipe, data=windows(), progress=False)
    assert result.plan.removed_blocks == [2]
    widths = result.model.config.prunekit_layer_widths
    assert widths["intermediate_size"] == [100, 64, 128] and widths["num_key_value_heads"] == [1, 2, 2]
    assert "listed widths" in prunekit.methods.registry.stage_label(result.plan.stages[1])


def test_listed_blocks_need_no_data():
    result = prunekit.prune(tiny_model("llama"), "blocks", blocks=[0, 3], progress=False)
    assert result.plan.kept_blocks == [1, 2]


@pytest.mark.parametrize(
    "options, flag",
    [
        ({"allocation": "listed"}, "channels"),
        ({"allocation": "listed", "channels": [64] * 4, "ratio": 0.2}, "allocation"),
        ({"channels": [64] * 4}, "channels"),
        ({"allocation": "listed", "channels": [64, 0, 64, 64]}, "channels"),
        ({"allocation": "listed", "channels": [64] * 4, "kv_groups": [1]}, "kv_groups"),
        ({"allocation": "listed", "channels": [64] * 4, "channel_multiple": 64}, "channel_multiple"),
    ],
)
def test_listed_widths_are_checked_before_any_work(options, flag):
    with pytest.raises(ParameterError, match=flag):
        prunekit.prune(tiny_model("llama"), "liar", data=windows(), progress=False, **options)


def test_listed_widths_are_checked_against_the_model():
    with pytest.raises(ParameterError, match="this model has 4"):
        prunekit.prune(tiny_model("llama"), "liar", allocation="listed", channels=[64] * 3, data=windows(), progress=False)
    with pytest.raises(ParameterError, match="layers have 128"):
        prunekit.prune(tiny_model("llama"), "liar", allocation="listed", channels=[64, 64, 64, 200], data=windows(), progress=False)
    with pytest.raises(ParameterError, match="blocks"):
        prunekit.prune(tiny_model("llama"), "blocks", blocks=[0, 1, 2, 3], progress=False)
