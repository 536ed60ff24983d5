"""The mixed-integer program: the optimum a brute force finds, within the budget, distinct candidates, none when none fits."""

import itertools

from prunekit.fitting.costs import DROPPED, LayerChoice, Structure, structure_params
from prunekit.fitting.library import LayerEntry, Library, ModelShape
from prunekit.fitting.solver import Budget, solve

SHAPE = ModelShape(
    num_layers=3,
    hidden=64,
    width=128,
    num_kv=2,
    group_size=2,
    head_dim=16,
    vocab=100,
    tied=False,
    attention_bias_field=True,
    mlp_bias_field=True,
)


def library() -> Library:
    layers = [
        LayerEntry(0, {1: 0.30}, {96: 0.05, 64: 0.20}, drop=2.0, seconds=0),
        LayerEntry(1, {1: 0.02}, {96: 0.01, 64: 0.03}, drop=0.10, seconds=0),
        LayerEntry(2, {1: 0.50}, {96: 0.08, 64: 0.25}, drop=0.60, seconds=0),
    ]
    return Library(SHAPE, [96, 64], [1], layers, settings={})


def options(entry: LayerEntry):
    yield DROPPED, entry.drop
    for kv, a in [(2, 0.0), *entry.attention.items()]:
        for c, f in [(128, 0.0), *entry.ffn.items()]:
            yield LayerChoice(kv, c), a + f


def brute_force(lib: Library, max_params: int, uniform: bool = False):
    best = None
    for combo in itertools.product(*(list(options(e)) for e in lib.layers)):
        structure = Structure([c for c, _ in combo])
        if not structure.kept or structure_params(SHAPE, structure) > max_params:
            continue
        if uniform and len({structure.layers[i] for i in structure.kept}) > 1:
            continue
        score = sum(s for _, s in combo)
        if best is None or score < best[0]:
            best = (score, structure)
    return best


def test_the_optimum_within_a_parameter_budget():
    lib = library()
    dense = structure_params(SHAPE, Structure([LayerChoice(2, 128)] * 3))
    for share in (0.9, 0.75, 0.6, 0.45):
        budget = int(share * dense)
        found = solve(lib, Budget(max_params=budget), count=1)
        expected = brute_force(lib, budget)
        assert abs(found[0].predicted_kl - expected[0]) < 1e-9
        # the program's costs are upper bounds (biases in every layer), so its answer always fits exactly
        assert structure_params(SHAPE, found[0].structure) <= budget


def test_uniform_widths_the_optimum_with_one_width_for_every_kept_layer():
    lib = library()
    dense = structure_params(SHAPE, Structure([LayerChoice(2, 128)] * 3))
    for share in (0.9, 0.75, 0.6, 0.45):
        budget = int(share * dense)
        found = solve(lib, Budget(max_params=budget), count=2, uniform=True)
        expected = brute_force(lib, budget, uniform=True)
        assert abs(found[0].predicted_kl - expected[0]) < 1e-9
        for solution in found:
            kept = {solution.structure.layers[i] for i in solution.structure.kept}
            assert len(kept) == 1 and structure_params(SHAPE, solution.structure) <= budget


def test_candidates_are_distinct_and_ordered():
    lib = library()
    dense = structure_params(SHAPE, Structure([LayerChoice(2, 128)] * 3))
    found = solve(lib, Budget(max_params=int(0.7 * dense)), count=3, differ=2)
    assert len(found) == 3
    assert [s.predicted_kl for s in found] == sorted(s.predicted_kl for s in found)
    keys = [s.structure.key() for s in found]
    assert len(set(keys)) == 3


def test_an_unreachable_budget_gives_nothing():
    assert solve(library(), Budget(max_params=10), count=2) == []
