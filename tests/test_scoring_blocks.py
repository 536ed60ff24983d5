import math

import pytest
import torch
import torch.nn.functional as F

from prunekit.data.windows import TokenWindows
from prunekit.errors import PrunekitError
from prunekit.scoring.blocks import block_metric_names, scan_blocks

from conftest import FAMILIES, tiny_model, zero_block


def windows_of(ids):
    return TokenWindows(ids, "test", ids.numel())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("metric", block_metric_names())
def test_an_identity_block_scores_zero_and_others_do_not(family, metric, ids):
    model = tiny_model(family)
    zero_block(model, 1)
    scores = scan_blocks(model, windows_of(ids), metric, progress=False)
    assert len(scores.scores) == 4
    assert scores.scores[1] == pytest.approx(0.0, abs=1e-5)
    assert min(abs(scores.scores[i]) for i in (0, 2, 3)) > 1e-4
    if metric != "removal-loss":  # removing a random block may also lower the loss
        assert scores.ranking()[0] == 1


def test_bi_matches_a_direct_computation_from_hidden_states(ids):
    model = tiny_model("llama")
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states
    # hidden_states[-1] has the final norm applied; rebuild the last block's raw output with a hook.
    outputs = []
    handle = model.model.layers[-1].register_forward_hook(lambda m, a, out: outputs.append(out))
    with torch.no_grad():
        model(ids)
    handle.remove()
    states = list(hidden[:-1]) + [outputs[0]]
    expected = [1 - F.cosine_similarity(states[i], states[i + 1], dim=-1).mean().item() for i in range(4)]
    scores = scan_blocks(model, windows_of(ids), "bi", batch_size=2, progress=False)
    assert scores.scores == pytest.approx(expected, abs=1e-5)


def test_angular_span_scores_one_value_per_span_start(ids):
    model = tiny_model("llama")
    scores = scan_blocks(model, windows_of(ids), "angular", span=2, progress=False)
    assert len(scores.scores) == 3 and scores.span == 2
    assert all(0 <= s <= 1 for s in scores.scores)
    assert scores.to_dict()["num_blocks"] == 4


def test_removal_loss_is_the_loss_increase_of_the_shortened_model(ids):
    model = tiny_model("qwen2")
    scores = scan_blocks(model, windows_of(ids), "removal-loss", progress=False)
    with torch.no_grad():
        base = model(ids, labels=ids).loss.item()
        del_model = tiny_model("qwen2")
        from prunekit.models.surgery import remove_blocks

        remove_blocks(del_model, [2])
        shortened = del_model(ids, labels=ids).loss.item()
    assert scores.details["base_loss"] == pytest.approx(base, rel=1e-4)
    assert scores.scores[2] == pytest.approx(shortened - base, abs=1e-4)


def test_unknown_metric_and_bad_span_are_refused(ids):
    model = tiny_model("llama")
    with pytest.raises(PrunekitError, match="metric 'foo' is unknown"):
        scan_blocks(model, windows_of(ids), "foo")
    with pytest.raises(PrunekitError, match="span 4"):
        scan_blocks(model, windows_of(ids), "angular", span=4)


def test_non_finite_activations_are_reported(ids):
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.fill_(math.inf)
    with pytest.raises(PrunekitError, match="non-finite"):
        scan_blocks(model, windows_of(ids), "bi", progress=False)


@pytest.mark.parametrize("metric", ["bi", "removal-cosine"])
def test_bfloat16_scans_rank_like_float32(metric, ids):
    model = tiny_model("llama")
    zero_block(model, 3)
    reference = scan_blocks(model, windows_of(ids), metric, progress=False)
    low = scan_blocks(model.to(torch.bfloat16), windows_of(ids), metric, progress=False)
    assert low.ranking()[0] == reference.ranking()[0] == 3
    assert low.scores == pytest.approx(reference.scores, abs=0.02)


@pytest.fixture
def own_registry(monkeypatch):
    """Metrics registered by a test are gone after it."""
    from prunekit.scoring import blocks

    monkeypatch.setattr(blocks.BLOCK_METRICS, "entries", dict(blocks.BLOCK_METRICS.entries))


def test_a_registered_block_metric_is_taken_wherever_a_metric_is(own_registry, ids):
    """A user's metric, in one class, reaches scan_blocks, the CLI's choices and the methods' configs."""
    import prunekit
    from prunekit.scoring import BlockMetric, block_metric_names, register_block_metric

    class LastIsLeast(BlockMetric):  # a control: the later the block, the less it matters
        name = "last-is-least"

        def score(self, model, windows, *, span, engine):
            count = len(prunekit.ModelAdapter(model).layers)
            return [float(count - i) for i in range(count)], {"note": "position only"}

    register_block_metric(LastIsLeast())
    model, windows = tiny_model("llama"), windows_of(ids)
    scores = scan_blocks(model, windows, "last-is-least", progress=False)
    assert scores.scores == [4.0, 3.0, 2.0, 1.0] and scores.details == {"note": "position only"}
    assert "last-is-least" in block_metric_names()
    result = prunekit.prune(model, prunekit.ShortGPTConfig(remove=1, metric="last-is-least"), windows, progress=False)
    assert result.plan.removed_blocks == [3]
    with pytest.raises(PrunekitError, match="metric 'nope' is unknown; choose one of bi, angular, .*last-is-least"):
        scan_blocks(model, windows, "nope")
