import pytest
import torch

from prunekit.errors import PrunekitError
from prunekit.methods.liar.allocation import LayerWidth, adaptive_widths, standardised, uniform_widths


def test_uniform_widths_keep_the_same_count_everywhere():
    assert uniform_widths(3, 4, 10, 0.5, 0.3) == [LayerWidth(2, 7)] * 3


def test_standardised_scores_have_zero_mean_and_unit_spread():
    z = standardised(torch.tensor([1.0, 2.0, 3.0, 10.0]))
    assert z.mean().abs() < 1e-12 and z.std() == pytest.approx(1.0)
    assert torch.equal(standardised(torch.ones(5)), torch.zeros(5, dtype=torch.float64))


def test_skewed_layer_loses_more_channels_within_the_budget():
    # Layer 0: a few channels dominate (most sit far below the layer mean); layer 1: evenly spread scores.
    skewed = torch.tensor([100.0, 90.0] + [1.0] * 18)
    even = torch.linspace(1.0, 2.0, 20)
    widths = adaptive_widths(None, [skewed, even], group_cost=50, channel_cost=1, width=20, num_kv=2, ffn_ratio=0.5, min_keep=0.1)
    kept = [w.channels for w in widths]
    assert sum(kept) == 20  # half of the 40 channels
    assert kept[0] < kept[1] and min(kept) >= 2  # the floor (10% of 20) holds
    assert all(w.kv_groups == 2 for w in widths)  # heads untouched without a head budget


def test_floor_keeps_a_layer_alive_and_an_unaffordable_floor_is_refused():
    one_strong = torch.tensor([10.0] + [1.0] * 9)  # z: one high, nine at -0.33
    spread = torch.arange(10.0)  # six channels with z above -0.33
    options = dict(group_cost=1, channel_cost=1, width=10, num_kv=1, ffn_ratio=0.7)
    assert [w.channels for w in adaptive_widths(None, [one_strong, spread], min_keep=0.1, **options)] == [1, 5]
    assert [w.channels for w in adaptive_widths(None, [one_strong, spread], min_keep=0.2, **options)] == [2, 4]
    with pytest.raises(PrunekitError, match="floor"):
        adaptive_widths(None, [one_strong, spread], min_keep=0.5, **options)


def test_joint_ranking_counts_every_unit_by_its_parameters():
    groups = [torch.tensor([5.0, -5.0]), torch.tensor([1.0, -1.0])]
    channels = [torch.arange(8.0), torch.arange(8.0)]
    widths = adaptive_widths(groups, channels, group_cost=4, channel_cost=1, width=8, num_kv=2, ratio=0.25, min_keep=0.25)
    kept_cost = sum(4 * w.kv_groups + w.channels for w in widths)
    total = 2 * (2 * 4 + 8)
    assert total - kept_cost >= 0.25 * total - 4  # within one group of the budget
    assert kept_cost <= 0.75 * total
    assert all(w.kv_groups >= 1 for w in widths)
