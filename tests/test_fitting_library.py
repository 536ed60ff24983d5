"""The per-layer library: each variant scored alone against the dense model, written layer by layer, resumed."""

import torch

from prunekit.data.windows import TokenWindows
from prunekit.fitting.library import build_library, channel_options, kv_options
from prunekit.models.surgery import remove_blocks

from conftest import tiny_model


def windows(count=8, seq_len=32, seed=0):
    torch.manual_seed(seed)
    ids = torch.randint(3, 200, (count, seq_len))
    return TokenWindows(ids, "random", ids.numel())


def kl(dense_logits, logits):
    ref = torch.log_softmax(dense_logits.double(), -1)
    return float((ref.exp() * (ref - torch.log_softmax(logits.double(), -1))).sum(-1).mean())


def test_options():
    assert channel_options(1536, 64) == [1152, 768, 384]
    assert channel_options(128, 1) == [96, 64, 32]
    assert kv_options(3) == [2, 1] and kv_options(8) == [7, 4, 1] and kv_options(1) == []


def test_dropping_a_layer_scores_the_kl_of_the_model_without_it(tmp_path):
    model = tiny_model("llama")
    calibration, scoring = windows(), windows(4, 16, seed=1)
    library = build_library(model, calibration, scoring, tmp_path / "lib", progress=False)
    assert [e.index for e in library.layers] == [0, 1, 2, 3]
    with torch.no_grad():
        dense = model(scoring.input_ids).logits
        for index in (0, 2):
            pruned = tiny_model("llama")
            remove_blocks(pruned, [index])
            expected = kl(dense, pruned(scoring.input_ids).logits)
            assert abs(library.layers[index].drop - expected) < 1e-3 * max(1.0, expected)
    for entry in library.layers:
        assert set(entry.ffn) == {96, 64, 32} and set(entry.attention) == {1}
        assert all(score >= 0 for score in [*entry.ffn.values(), *entry.attention.values(), entry.drop])
        assert entry.ffn[32] >= entry.ffn[96] * 0.5  # narrower is not (much) better than wider
    # the dense model is unchanged by scoring
    fresh = tiny_model("llama")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))


def test_a_rerun_resumes_from_the_written_layers(tmp_path):
    model = tiny_model("llama")
    calibration, scoring = windows(), windows(4, 16, seed=1)
    first = build_library(model, calibration, scoring, tmp_path / "lib", progress=False)
    (tmp_path / "lib" / "layer-003.json").unlink()  # as if stopped before the last layer
    again = build_library(model, calibration, scoring, tmp_path / "lib", progress=False)
    assert again.resumed_layers == 3
    assert [e.drop for e in again.layers] == [e.drop for e in first.layers]
    assert abs(again.layers[3].ffn[64] - first.layers[3].ffn[64]) < 1e-9
