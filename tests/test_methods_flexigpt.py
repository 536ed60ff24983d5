import pytest
import torch

from prunekit.data.windows import TokenWindows
from prunekit.errors import PrunekitError
from prunekit.methods.flexigpt import distance_table, extend_model, low_rank_distance, replace_blocks
from prunekit.models.adapters import ModelAdapter, parameter_count
from prunekit.models.shared_blocks import shared_linears
from prunekit.models.shared_checkpoint import load_shared_model, merge_shared_blocks, save_shared_model
from prunekit.recovery import RecoveryConfig, recover

from conftest import FAMILIES, VOCAB, tiny_model

FULL_RANK = 64  # the hidden size: at least min(out, in) of every tiny linear


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_full_rank_without_output_norm_reproduces_the_pruned_block(family, ids):
    model = tiny_model(family)
    before = logits(model, ids)
    record = replace_blocks(model, [1, 2], rank=FULL_RANK, output_norm=None, progress=False)
    torch.testing.assert_close(logits(model, ids), before, rtol=1e-4, atol=1e-4)
    assert set(record["shares_with"]) == {"1", "2"} and all(v in (0, 3) for v in record["shares_with"].values())


def test_replacement_borrows_the_shared_blocks_storage_and_saves_parameters():
    model = tiny_model("llama")
    dense = parameter_count(model)
    record = replace_blocks(model, [2], rank=4, progress=False)
    layers = ModelAdapter(model).layers
    owner = layers[record["shares_with"]["2"]]
    shared_q = layers[2].self_attn.q_proj
    assert shared_q.base.weight.data_ptr() == owner.self_attn.q_proj.weight.data_ptr()
    assert layers[2].mlp.down_proj.projection.base.weight.data_ptr() == owner.mlp.down_proj.weight.data_ptr()
    assert record["params_after"] == parameter_count(model) < dense
    assert 0 < record["own_parameters_fraction_of_block"] < 0.2


def test_low_rank_distance_matches_its_definition():
    torch.manual_seed(0)
    a, b, rank = torch.randn(20, 14, dtype=torch.float64), torch.randn(20, 14, dtype=torch.float64), 3

    def truncate(w):
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        return u[:, :rank] @ torch.diag(s[:rank]) @ vh[:rank], (u[:, :rank] * s[:rank], vh[:rank])

    (ar, af), (br, bf) = truncate(a), truncate(b)
    delta, _ = truncate(ar - br)
    expected = torch.linalg.norm(ar - (br + delta)).item()
    assert low_rank_distance(af, bf, rank) == pytest.approx(expected, rel=1e-9)


def test_distance_prefers_the_more_similar_block():
    model = tiny_model("llama")
    layers = ModelAdapter(model).layers
    with torch.no_grad():  # block 3 becomes block 1 plus a little noise
        for p3, p1 in zip(layers[3].parameters(), layers[1].parameters()):
            p3.copy_(p1 + 0.001 * torch.randn_like(p1))
    for distance in ("low-rank", "frobenius"):
        table = distance_table(model, [3], [0, 1, 2], rank=4, distance=distance)
        assert min(table[3], key=table[3].get) == 1


def test_save_load_and_merge_round_trips_keep_the_logits(tmp_path, ids, tiny_tokenizer):
    model = tiny_model("llama")
    replace_blocks(model, [1], rank=8, progress=False)
    with torch.no_grad():
        for linear in shared_linears(ModelAdapter(model).layers[1]):
            linear.lora_B.add_(0.01)  # as after training
    expected = logits(model, ids)
    out = save_shared_model(model, tiny_tokenizer, tmp_path / "shared")
    assert not (out / "model.safetensors").exists()
    reloaded = load_shared_model(out)
    torch.testing.assert_close(logits(reloaded, ids), expected, rtol=0, atol=0)
    assert parameter_count(reloaded) == parameter_count(model)
    with pytest.raises(PrunekitError, match="output normalisation"):
        merge_shared_blocks(reloaded)

    plain = tiny_model("llama")
    replace_blocks(plain, [1, 2], rank=8, output_norm=None, progress=False)
    expected = logits(plain, ids)
    merge_shared_blocks(plain)
    from prunekit.models.export import save_model

    save_model(plain, tiny_tokenizer, tmp_path / "merged")
    import transformers

    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    torch.testing.assert_close(logits(merged, ids), expected, rtol=1e-5, atol=1e-5)


def test_extension_with_zero_scale_is_the_original_function_and_small_scale_is_close(ids):
    base = tiny_model("llama")
    expected = logits(base, ids)
    for pattern in ("block", "sequential"):
        model = tiny_model("llama")
        record = extend_model(model, 6, pattern=pattern, rank=4, output_norm=0.0)
        assert ModelAdapter(model).num_blocks == 6 == model.config.num_hidden_layers and record["blocks_after"] == 6
        torch.testing.assert_close(logits(model, ids), expected, rtol=0, atol=1e-5)
    small = tiny_model("llama")
    extend_model(small, 6, rank=4, output_norm=1e-3)
    drift = (logits(small, ids) - expected).abs().max().item()
    assert 0 < drift < 0.05 * expected.abs().max().item()
    generated = small.generate(ids[:1, :8], max_new_tokens=4, do_sample=False)
    assert generated.shape == (1, 12)  # the KV cache knows every layer


def test_training_adapters_only_touches_adapters_and_reduces_the_loss():
    teacher = tiny_model("llama")
    model = tiny_model("llama")
    replace_blocks(model, [1, 2], rank=4, progress=False)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if "lora" not in k and "scale" not in k}
    data = torch.randint(3, VOCAB, (8, 16), generator=torch.Generator().manual_seed(0))
    result = recover(
        model,
        TokenWindows(data, "random", data.numel()),
        RecoveryConfig(tokens=8 * 16 * 2, seq_len=16, grad_accumulation=1, micro_batch_size=2, learning_rate=1e-2, scope="adapters"),
        teacher=teacher,
        progress=False,
    )
    assert result.loss_last < result.loss_first
    state = model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in frozen.items())


def test_bad_requests_are_refused():
    model = tiny_model("llama")
    with pytest.raises(PrunekitError, match="leaving at least one"):
        replace_blocks(model, [0, 1, 2, 3], progress=False)
    with pytest.raises(PrunekitError, match="to_blocks"):
        extend_model(model, 4)
    with pytest.raises(PrunekitError, match="pattern"):
        extend_model(model, 5, pattern="zigzag")


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_measured_output_norm_starts_at_the_replaced_blocks_own_output_rms(family, ids):
    import prunekit
    from prunekit import FlexiGPTConfig, TokenWindows
    from prunekit.methods.flexigpt import measured_output_rms

    dense = tiny_model(family)
    calibration = TokenWindows(ids, "ids", ids.numel())
    result = prunekit.prune(dense, FlexiGPTConfig(remove=1, recovery=None, output_norm="measured"), calibration, progress=False)
    (block,) = result.plan.details()["replaced_blocks"]
    expected = measured_output_rms(dense, calibration, [block], {"progress": False})[block]
    adapter = ModelAdapter(result.model)
    assert torch.allclose(adapter.attention_output(block).norm.scale, expected["attention"])
    assert torch.allclose(adapter.mlp_output(block).norm.scale, expected["mlp"]) and expected["mlp"].min() > 0
    assert result.plan.details()["output_norm"] == "measured"
    with pytest.raises(PrunekitError, match="needs a replaced block"):
        prunekit.prune(dense, prunekit.ExtendConfig(to_blocks=5, output_norm="measured", recovery=None))


def test_output_norm_scales_can_train_at_their_own_learning_rate():
    from prunekit.models.shared_blocks import OutputNorm
    from prunekit.recovery.trainer import _parameter_groups

    model = tiny_model("llama")
    replace_blocks(model, [1], rank=4, progress=False)
    config = RecoveryConfig(scope="adapters", tokens=64, seq_len=16, grad_accumulation=1, learning_rate=1e-4, norm_scale_learning_rate=1e-2)
    scales = [m.scale for m in model.modules() if isinstance(m, OutputNorm)]
    groups = _parameter_groups(model, list(model.parameters()), config)
    assert len(groups) == 2 and groups[1]["lr"] == 1e-2 and {id(p) for p in groups[1]["params"]} == {id(p) for p in scales}
    before = [p.detach().clone() for p in scales]
    windows = TokenWindows(torch.randint(3, VOCAB, (8, 16)), "random", 128)
    recover(model, windows, config, teacher=tiny_model("llama"), progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(before, scales))
    with pytest.raises(PrunekitError, match="norm_scale_learning_rate 0"):
        RecoveryConfig(norm_scale_learning_rate=0).check()
