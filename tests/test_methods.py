import pytest
import torch

from prunekit.api import blocks_to_remove, prune
from prunekit.data.windows import TokenWindows
from prunekit.errors import PrunekitError
from prunekit.methods import Plan, PrunePlan
from prunekit.models.adapters import ModelAdapter
from prunekit.scoring.blocks import scan_blocks

from conftest import tiny_model, zero_block


def windows_of(ids):
    return TokenWindows(ids, "test", ids.numel())


def test_shortgpt_removes_the_lowest_bi_blocks_and_leaves_the_input_alone(ids):
    model = tiny_model("llama", num_layers=4)
    zero_block(model, 2)
    bi = scan_blocks(model, windows_of(ids), "bi", progress=False)
    pruned, plan = prune(model, "shortgpt", windows_of(ids), remove=2, progress=False)
    assert plan.removed_blocks == sorted(bi.ranking()[:2]) and 2 in plan.removed_blocks
    assert ModelAdapter(model).num_blocks == 4 and ModelAdapter(pruned).num_blocks == 2
    assert plan.params_after < plan.params_before


def test_angular_removes_a_contiguous_span(ids):
    model = tiny_model("mistral")
    zero_block(model, 1)
    zero_block(model, 2)
    _, plan = prune(model, "angular", windows_of(ids), remove=2, progress=False)
    assert plan.removed_blocks == [1, 2]


def test_sleb_rescores_after_each_removal(ids):
    model = tiny_model("qwen3")
    zero_block(model, 3)
    _, plan = prune(model, "sleb", windows_of(ids), remove=2, progress=False)
    steps = plan.details()["steps"]
    assert len(steps) == 2 and steps[0]["removed"] == 3
    assert 3 not in steps[1]["scores"] and len(steps[1]["scores"]) == 3
    assert plan.removed_blocks == sorted(s["removed"] for s in steps)


def test_protected_blocks_are_never_removed(ids):
    model = tiny_model("llama")
    zero_block(model, 0)
    _, plan = prune(model, "shortgpt", windows_of(ids), remove=1, protect=(0,), progress=False)
    assert plan.removed_blocks != [0]


def test_saved_plan_reapplies_to_the_same_model(tmp_path, ids):
    model = tiny_model("gemma2")
    pruned, plan = prune(model, "shortgpt", windows_of(ids), remove=2, progress=False)
    plan.save(tmp_path / "plan.json")
    again, _ = prune(model, plan=Plan.load(tmp_path / "plan.json"))
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, pruned(ids).logits, rtol=0, atol=0)
    with pytest.raises(PrunekitError, match="made for a model with 4 blocks"):
        prune(tiny_model("gemma2", num_layers=3), plan=plan)


@pytest.mark.parametrize(
    "remove, ratio, message",
    [
        (None, None, "exactly one"),
        (0, None, "at least 1"),
        (4, None, "smaller than"),
        (None, 1.0, "strictly between"),
        (None, 0.01, "removes nothing"),
        (2, 0.5, "exactly one"),
    ],
)
def test_impossible_amounts_are_refused(remove, ratio, message):
    with pytest.raises(PrunekitError, match=message):
        blocks_to_remove(4, remove, ratio)


def test_ratio_rounds_to_whole_blocks():
    assert blocks_to_remove(30, ratio=0.2) == 6


@pytest.mark.parametrize(
    "change, message",
    [
        ({"removed_blocks": 5}, "must be a list of block indices"),
        ({"removed_blocks": None}, "must be a list"),
        ({"removed_blocks": ["x"]}, "must be a list"),
        ({"removed_blocks": "13"}, "must be a list"),
        ({"removed_blocks": [1.7]}, "must be a list"),
        ({"num_blocks_before": "6"}, "num_blocks_before must be a positive"),
        ({"method": "liar"}, "a liar plan cannot be re-applied: its reconstruction"),
        ({"method": "magic"}, "plan method 'magic' is unknown"),
        ({"method": None}, "plan has no method"),
        ({"scores": "high"}, "scores must be a list"),
    ],
)
def test_hand_edited_plans_get_one_line_errors(change, message):
    plan = {"method": "shortgpt", "removed_blocks": [1, 3], "num_blocks_before": 6, "scores": [0.1] * 6}
    with pytest.raises(PrunekitError, match=message):
        PrunePlan.from_dict({**plan, **change})
