import dataclasses

import pytest
import torch
import transformers

from prunekit.data.windows import TokenWindows
from prunekit.errors import PrunekitError
from prunekit.methods.liar import decoder as liar
from prunekit.methods.liar.decoder import prune_width
from prunekit.methods.liar.reconstruction import damping_errors, fold_pruned_inputs, output_error
from prunekit.models.adapters import FAMILIES as FAMILY_TABLE
from prunekit.models.export import save_model
from prunekit.scoring.channels import InputStatistics

from conftest import FAMILIES, tiny_model


def windows_of(ids):
    return TokenWindows(ids, "test", ids.numel())


def correlated_inputs(n=400, width=12, seed=0):
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    mix = torch.randn(4, width, generator=generator, dtype=torch.float64)
    return base @ mix + 0.05 * torch.randn(n, width, generator=generator, dtype=torch.float64) + 0.3


def stats_of(x):
    stats = InputStatistics(x.shape[1])
    stats.add(x)
    return stats


def test_liar_is_never_worse_than_bias_compensation_which_beats_dropping():
    x = correlated_inputs()
    stats = stats_of(x)
    weight = torch.randn(5, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    keep = torch.tensor([0, 2, 3, 5, 7, 8, 11])
    errors = {
        m: output_error(weight, keep, fold_pruned_inputs(weight, keep, stats, m, damping=0.0), stats) for m in ("none", "bias", "liar")
    }
    assert errors["liar"] <= errors["bias"] + 1e-9 < errors["none"]
    # the Gram-matrix error equals the error measured on the activations themselves
    folded = fold_pruned_inputs(weight, keep, stats, "liar", damping=0.0)
    direct = ((x @ weight.T) - (x[:, keep] @ folded.weight.T + folded.bias)).pow(2).sum(1).mean()
    assert errors["liar"] == pytest.approx(direct.item(), rel=1e-6)


def test_exactly_predictable_channels_are_reconstructed_exactly():
    generator = torch.Generator().manual_seed(2)
    kept = torch.randn(300, 6, generator=generator, dtype=torch.float64)
    pruned = kept[:, :2] @ torch.randn(2, 3, generator=generator, dtype=torch.float64) + 1.5
    x = torch.cat([kept, pruned], 1)
    weight = torch.randn(4, 9, generator=generator, dtype=torch.float64)
    folded = fold_pruned_inputs(weight, torch.arange(6), stats_of(x), "liar", damping=0.0)
    assert output_error(weight, torch.arange(6), folded, stats_of(x)) < 1e-12


def test_singular_gram_is_damped_not_nan():
    x = torch.ones(50, 6, dtype=torch.float64)  # all channels identical: singular Gram
    weight = torch.randn(3, 6, dtype=torch.float64)
    with pytest.warns(UserWarning, match="singular"):
        folded = fold_pruned_inputs(weight, torch.tensor([0, 1, 2]), stats_of(x), "liar", damping=0.0)
    assert torch.isfinite(folded.weight).all() and torch.isfinite(folded.bias).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_ffn_pruning_reloads_with_plain_transformers(family, ids, tmp_path, tiny_tokenizer):
    model = tiny_model(family)
    reconstruction = "liar"
    plan = prune_width(model, windows_of(ids), ffn_ratio=0.5, criterion="wanda", reconstruction=reconstruction, progress=False)
    assert model.config.intermediate_size == 64 and plan["params_after"] < plan["params_before"]
    out = save_model(model, tiny_tokenizer, tmp_path / "w")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, rtol=0, atol=0)
        assert torch.isfinite(reloaded(ids).logits).all()
    assert all(torch.isfinite(p).all() for p in reloaded.parameters())
    assert reloaded.config.mlp_bias is True if family == "llama" else not getattr(reloaded.config, "mlp_bias", False)


@pytest.mark.parametrize("criterion", ["magnitude", "wanda", "fluctuation", "random"])
def test_reconstruction_improves_the_pruned_model_on_calibration_data(criterion, ids):
    dense = tiny_model("llama")
    with torch.no_grad():
        reference = dense(ids).logits
    errors = {}
    for reconstruction in ("none", "bias", "liar"):
        model = tiny_model("llama")
        prune_width(model, windows_of(ids), ffn_ratio=0.5, criterion=criterion, reconstruction=reconstruction, progress=False)
        with torch.no_grad():
            errors[reconstruction] = (model(ids).logits - reference).pow(2).mean().item()
    assert errors["liar"] < errors["none"]


def test_bad_ratios_and_bias_without_config_support_are_refused(ids):
    with pytest.raises(PrunekitError, match=r"must be in \[0, 1\)"):
        prune_width(tiny_model("llama"), windows_of(ids), ffn_ratio=1.0)
    with pytest.raises(PrunekitError, match="cannot hold"):
        prune_width(tiny_model("qwen2"), windows_of(ids), ffn_ratio=0.5, reconstruction="bias", progress=False)
    with pytest.raises(PrunekitError, match="criterion 'vibes' is unknown"):
        prune_width(tiny_model("llama"), windows_of(ids), ffn_ratio=0.5, criterion="vibes")


@pytest.mark.parametrize("family", FAMILIES)
def test_head_and_ffn_pruning_keeps_gqa_groups_and_reloads(family, ids, tmp_path, tiny_tokenizer):
    from prunekit.methods.liar.decoder import prune_width

    model = tiny_model(family)  # 4 query heads in 2 KV groups
    plan = prune_width(model, windows_of(ids), head_ratio=0.5, ffn_ratio=0.25, progress=False)
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (2, 1)
    assert all(len(layer["kept_kv_groups"]) == 1 for layer in plan["layers"])
    out = save_model(model, tiny_tokenizer, tmp_path / "w")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    prompt = ids[:1, :5]
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(reloaded.generate(prompt, use_cache=True, **kwargs), reloaded.generate(prompt, use_cache=False, **kwargs))


def test_head_reconstruction_beats_dropping_heads(ids):
    from prunekit.methods.liar.decoder import prune_width

    dense = tiny_model("llama")
    with torch.no_grad():
        reference = dense(ids).logits
    errors = {}
    for reconstruction in ("none", "liar"):
        model = tiny_model("llama")
        prune_width(model, windows_of(ids), head_ratio=0.5, reconstruction=reconstruction, progress=False)
        with torch.no_grad():
            errors[reconstruction] = (model(ids).logits - reference).pow(2).mean().item()
    assert errors["liar"] < errors["none"]


def test_impossible_head_ratios_are_refused(ids):
    from prunekit.methods.liar.decoder import prune_width

    with pytest.raises(PrunekitError, match="every KV group"):
        prune_width(tiny_model("llama"), windows_of(ids), head_ratio=0.9)


@pytest.mark.parametrize("family, heads", [("llama", True), ("llama", False), ("phi3", True)])
def test_block_ratio_splits_into_whole_kv_groups_and_ffn_channels(family, heads):
    from prunekit.methods.liar.decoder import split_block_ratio
    from prunekit.models.adapters import ModelAdapter

    model = tiny_model(family)
    adapter = ModelAdapter(model)
    block = adapter.block_parameter_count(0)
    head_ratio, ffn_ratio = split_block_ratio(model, 0.4, heads=heads)
    assert head_ratio == (0.5 if heads else 0.0)  # 1 of 2 groups fits in 40%
    windows = TokenWindows(torch.randint(3, 300, (2, 16), generator=torch.Generator().manual_seed(0)), "random", 32)
    prune_width(model, windows, ffn_ratio=ffn_ratio, head_ratio=head_ratio, reconstruction="none", progress=False)
    removed = 1 - adapter.block_parameter_count(0) / block
    assert abs(removed - 0.4) < 0.02
    with pytest.raises(PrunekitError, match="every FFN channel"):
        split_block_ratio(tiny_model(family), 0.99, heads=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_adaptive_widths_differ_per_layer_and_reload_through_prunekit_only(family, ids, tmp_path, tiny_tokenizer):
    from prunekit.models.adapters import ModelAdapter
    from prunekit.models.loading import load_model

    model = tiny_model(family)
    with torch.no_grad():  # make block 0's FFN channels far more uneven than the others'
        ModelAdapter(model).layers[0].mlp.down_proj.weight[:, :8].mul_(20)
    block_before = sum(ModelAdapter(model).block_parameter_count(i) for i in range(4))
    plan = prune_width(model, windows_of(ids), ratio=0.3, ratio_heads=True, allocation="adaptive", min_keep=0.1, progress=False)
    assert plan["per_layer_widths"] is True and plan["peak_rss_mib"] > 0
    assert 0 < plan["ffn_channels_removed"] < 1
    widths = model.config.prunekit_layer_widths
    assert len(set(widths["intermediate_size"])) > 1 and min(widths["intermediate_size"]) >= 0.1 * 128
    assert min(widths["num_key_value_heads"]) >= 1
    removed = 1 - sum(ModelAdapter(model).block_parameter_count(i) for i in range(4)) / block_before
    assert 0.2 < removed <= 0.31
    out = save_model(model, tiny_tokenizer, tmp_path / "adaptive")
    with pytest.raises(Exception, match="(?i)size"):
        transformers.AutoModelForCausalLM.from_pretrained(out)  # plain transformers refuses; it never loads wrongly
    reloaded = load_model(str(out), device="cpu", dtype="float32").model
    for p in reloaded.parameters():
        assert torch.isfinite(p).all()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    prompt = ids[:1, :5]
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(reloaded.generate(prompt, use_cache=True, **kwargs), reloaded.generate(prompt, use_cache=False, **kwargs))


def test_removing_blocks_after_adaptive_width_pruning_keeps_the_widths_consistent(ids, tmp_path, tiny_tokenizer):
    from prunekit.models.loading import load_model
    from prunekit.models.surgery import remove_blocks

    model = tiny_model("llama")
    prune_width(model, windows_of(ids), ffn_ratio=0.5, allocation="adaptive", progress=False)
    expected = model.config.prunekit_layer_widths["intermediate_size"]
    remove_blocks(model, [1])
    out = save_model(model, tiny_tokenizer, tmp_path / "shorter")
    reloaded = load_model(str(out), device="cpu", dtype="float32").model
    assert reloaded.config.prunekit_layer_widths["intermediate_size"] == [expected[0]] + expected[2:]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, rtol=0, atol=0)


@pytest.mark.parametrize("family", ["llama", "phi3"])
def test_taylor_criterion_scores_from_one_gradient_pass_and_leaves_no_gradients(family, ids):
    from prunekit.scoring.gradients import taylor_unit_scores

    model = tiny_model(family)
    scores = taylor_unit_scores(model, windows_of(ids))
    assert len(scores) == 4
    assert scores[0]["ffn"].shape == (128,) and scores[0]["heads"].shape == (model.config.num_attention_heads * 16,)
    assert all((s["ffn"] >= 0).all() and s["ffn"].sum() > 0 for s in scores)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    plan = prune_width(model, windows_of(ids), ffn_ratio=0.25, head_ratio=0.5, criterion="taylor", progress=False)
    assert plan["criterion"] == "taylor" and model.config.intermediate_size == 96


def test_adaptive_options_are_checked_before_any_work(ids):
    with pytest.raises(PrunekitError, match="allocation"):
        prune_width(tiny_model("llama"), windows_of(ids), ffn_ratio=0.5, allocation="greedy")
    with pytest.raises(PrunekitError, match="min_keep"):
        prune_width(tiny_model("llama"), windows_of(ids), ffn_ratio=0.5, allocation="adaptive", min_keep=0.0)


def test_held_out_batches_are_counted_apart_and_the_rest_is_the_fitted_part():
    stats = InputStatistics(3, holdout_every=2)
    batches = [torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    for batch in batches:
        stats.add(batch)
    held = torch.cat(batches[1::2])
    assert stats.held_out.count == 10 and torch.allclose(stats.held_out.gram, held.T @ held)
    fitted = torch.cat(batches[0::2])
    assert torch.allclose(stats.fitted_part().gram, fitted.T @ fitted) and stats.count == 20


def test_auto_damping_is_chosen_on_held_out_batches_and_resists_overfitting():
    generator = torch.Generator().manual_seed(3)
    width, kept = 40, torch.arange(30)
    weight = torch.randn(6, width, generator=generator, dtype=torch.float64)

    def batch(n):  # pruned channels are unrelated noise: any fitted map is over-fitting
        return torch.randn(n, width, generator=generator, dtype=torch.float64)

    stats = InputStatistics(width, holdout_every=4)
    for _ in range(8):
        stats.add(batch(8))  # 64 tokens for 31 regressors
    test = stats_of(batch(4000))
    auto = fold_pruned_inputs(weight, kept, stats, "liar", damping="auto")
    tiny = fold_pruned_inputs(weight, kept, stats, "liar", damping=1e-4)
    assert auto.damping > 1e-4
    assert output_error(weight, kept, auto, test) < output_error(weight, kept, tiny, test)


def test_auto_damping_keeps_an_exact_fit_exact():
    generator = torch.Generator().manual_seed(4)
    stats = InputStatistics(9, holdout_every=4)
    mix = torch.randn(2, 3, generator=generator, dtype=torch.float64)
    for _ in range(8):
        kept = torch.randn(50, 6, generator=generator, dtype=torch.float64)
        stats.add(torch.cat([kept, kept[:, :2] @ mix + 1.5], 1))
    weight = torch.randn(4, 9, generator=generator, dtype=torch.float64)
    folded = fold_pruned_inputs(weight, torch.arange(6), stats, "liar", damping="auto")
    assert folded.damping == 1e-4 and output_error(weight, torch.arange(6), folded, stats) < 1e-6


def test_width_pruning_with_auto_damping_records_the_choice(ids):
    model = tiny_model("llama")
    windows = windows_of(torch.cat([ids] * 4))
    plan = prune_width(model, windows, ffn_ratio=0.25, head_ratio=0.5, damping="auto", progress=False)
    assert plan["damping"] == "auto"
    assert all(layer["damping"] in (1e-4, 1e-3, 1e-2, 1e-1, 1.0) and "o_proj_damping" in layer for layer in plan["layers"])
    with pytest.raises(PrunekitError, match="damping"):
        prune_width(tiny_model("llama"), windows, ffn_ratio=0.25, damping="lots")


def _pruned_state(model, windows, **options):
    plan = prune_width(model, windows, ffn_ratio=0.25, progress=False, **options)
    return plan, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kept", ["down inputs", "mlp inputs"])
@pytest.mark.parametrize("family", FAMILIES)
def test_ffn_outputs_are_recomputed_in_one_pass_and_match_running_the_pruned_block(family, kept, ids, monkeypatch):
    windows = windows_of(torch.cat([ids] * 4))
    monkeypatch.setattr(liar, "_keeps_down_inputs", lambda device: kept == "down inputs")  # the CPU's and the GPU's way
    plan, recomputed = _pruned_state(tiny_model(family), windows)
    assert plan["ffn_outputs"] == "recomputed"
    monkeypatch.setattr(liar._FfnPass, "can_recompute", property(lambda self: False))
    plan, rerun = _pruned_state(tiny_model(family), windows)
    assert plan["ffn_outputs"] == "recomputed"  # (the check never ran: every block was run again)
    assert all(torch.allclose(recomputed[k], rerun[k], rtol=1e-4, atol=1e-6) for k in rerun)


def test_a_block_that_is_not_residual_plus_mlp_is_run_again(ids, monkeypatch):
    windows = windows_of(torch.cat([ids] * 4))
    _, expected = _pruned_state(tiny_model("llama"), windows)
    wrong = dataclasses.replace(FAMILY_TABLE["llama"], mlp_post_norm_attr="input_layernorm")  # a norm the block does not apply
    monkeypatch.setitem(FAMILY_TABLE, "llama", wrong)
    plan, state = _pruned_state(tiny_model("llama"), windows)
    assert plan["ffn_outputs"] == "rerun"
    assert all(torch.allclose(expected[k], state[k], rtol=1e-4, atol=1e-6) for k in state)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_statistics_in_lower_precision_products_match_float64(dtype):
    generator = torch.Generator().manual_seed(5)
    batches = [(torch.randn(64, 300, generator=generator) * 3 + 1).to(dtype) for _ in range(6)]
    fast, exact = InputStatistics(300, holdout_every=3), InputStatistics(300, holdout_every=3)
    for batch in batches:
        fast.add(batch)
        exact.add(batch.double())
    rows = torch.cat(batches).double()
    assert torch.allclose(exact.gram, rows.T @ rows, rtol=1e-12)  # the block-triangle product is exact in float64
    assert torch.allclose(fast.gram, exact.gram, rtol=1e-5, atol=1e-3) and torch.allclose(fast.sum, exact.sum, rtol=1e-6)
    assert torch.equal(fast.gram, fast.gram.T) and fast.count == exact.count == 384 and fast.held_out.count == 128


def test_a_statistics_matrix_that_cannot_fit_is_refused_before_any_work(ids, monkeypatch):
    monkeypatch.setattr(liar, "available_memory_bytes", lambda device: 1000)
    with pytest.raises(PrunekitError, match="statistics for 128 channels need"):
        prune_width(tiny_model("llama"), windows_of(ids), ffn_ratio=0.25, progress=False)


def test_exhaustive_and_descending_damping_searches_agree_on_a_ridge_curve():
    generator = torch.Generator().manual_seed(6)
    width, kept = 40, torch.arange(30)
    weight = torch.randn(6, width, generator=generator, dtype=torch.float64)
    mix = torch.randn(30, 10, generator=generator, dtype=torch.float64)
    stats = InputStatistics(width, holdout_every=4)
    for _ in range(8):
        x = torch.randn(16, 30, generator=generator, dtype=torch.float64)
        stats.add(torch.cat([x, x @ mix + torch.randn(16, 10, generator=generator, dtype=torch.float64)], 1))
    every = damping_errors(weight, kept, stats, with_bias=True, exhaustive=True)
    tried = damping_errors(weight, kept, stats, with_bias=True)
    assert len(every) == 5 and len(tried) <= 5
    assert min(tried, key=tried.get) == min(every, key=every.get)
    assert all(tried[d] == pytest.approx(every[d]) for d in tried)


@pytest.mark.parametrize("damping", ["auto", 1e-3])
def test_releasing_the_statistics_part_by_part_changes_nothing_but_frees_them(damping):
    generator = torch.Generator().manual_seed(8)
    width, keep = 24, torch.arange(0, 24, 2)
    weight = torch.randn(5, width, generator=generator, dtype=torch.float64)
    batches = [correlated_inputs(32, width, seed=i) for i in range(8)]
    kept_stats, released_stats = InputStatistics(width, holdout_every=4), InputStatistics(width, holdout_every=4)
    for batch in batches:
        kept_stats.add(batch)
        released_stats.add(batch)
    kept = fold_pruned_inputs(weight, keep, kept_stats, "liar", damping=damping)
    released = fold_pruned_inputs(weight, keep, released_stats, "liar", damping=damping, release=True)
    assert released.damping == kept.damping and released.output_error == pytest.approx(kept.output_error, rel=1e-12)
    assert torch.equal(released.weight, kept.weight) and torch.equal(released.bias, kept.bias)
    assert released_stats.count == 0 and released_stats._lower is None and released_stats.held_out._lower is None
    assert kept_stats.count == 8 * 32  # without release the statistics stay usable


def test_kept_channels_can_be_rounded_to_a_multiple_and_still_reload(ids, tmp_path, tiny_tokenizer):
    model = tiny_model("llama")
    plan = prune_width(model, windows_of(torch.cat([ids] * 4)), ffn_ratio=0.3, channel_multiple=16, progress=False)
    assert plan["intermediate_size_after"] == 96 and plan["channel_multiple"] == 16  # 128 - 38 = 90 -> 96
    save_model(model, tiny_tokenizer, tmp_path / "m")
    assert transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m").config.intermediate_size == 96
    with pytest.raises(PrunekitError, match="channel_multiple 0"):
        prune_width(tiny_model("llama"), windows_of(ids), ffn_ratio=0.3, channel_multiple=0, progress=False)


def test_the_default_rounds_a_real_models_ffn_to_64_and_leaves_a_tiny_one_alone(ids):
    import prunekit
    from prunekit.cli import build_parser

    assert liar.resolve_channel_multiple("auto", 14336) == 64 and liar.resolve_channel_multiple("auto", 128) == 1
    assert liar.resolve_channel_multiple(16, 128) == 16
    wide = transformers.AutoModelForCausalLM.from_config(
        transformers.LlamaConfig(vocab_size=320, hidden_size=32, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=2)
    ).eval()
    data = windows_of(torch.cat([ids] * 4))
    rounded = prunekit.prune(wide, "liar", data, ffn_ratio=0.3, progress=False).plan.stages[0]["details"]
    assert rounded["channel_multiple"] == 64 and rounded["intermediate_size_after"] == 704  # 1024 - 307 = 717 -> 704
    exact = prunekit.prune(wide, "liar", data, ffn_ratio=0.3, channel_multiple=1, progress=False).plan.stages[0]["details"]
    assert exact["intermediate_size_after"] == 717
    tiny = prunekit.prune(tiny_model("llama"), "liar", data, ffn_ratio=0.3, progress=False).plan.stages[0]["details"]
    assert tiny["channel_multiple"] == 1 and tiny["intermediate_size_after"] == 90
    parse = build_parser().parse_args
    assert parse(["prune", "--model", "m", "--out", "o", "--channel-multiple", "auto"]).channel_multiple == "auto"
    assert parse(["prune", "--model", "m", "--out", "o", "--channel-multiple", "64"]).channel_multiple == 64.0  # made 64 by the check
    with pytest.raises(Exception, match="channel_multiple"):
        prunekit.prune(tiny_model("llama"), "liar", data, ffn_ratio=0.3, channel_multiple="fast")


def test_widths_that_gpus_run_slowly_get_a_hint_only_where_the_pruning_runs_on_a_gpu():
    from prunekit.methods.liar.allocation import LayerWidth

    odd = [LayerWidth(kv_groups=2, channels=10786), LayerWidth(kv_groups=2, channels=14336)]
    assert "channel_multiple 64" in liar.unaligned_widths_hint(odd, 14336, torch.device("cuda"))
    assert liar.unaligned_widths_hint(odd, 14336, torch.device("cpu")) is None
    rounded = [LayerWidth(kv_groups=2, channels=10816)]
    assert liar.unaligned_widths_hint(rounded, 14336, torch.device("cuda")) is None


def test_a_statistics_pass_sees_down_proj_inputs_without_multiplying_and_leaves_the_layer_as_it_was():
    linear = torch.nn.Linear(6, 4)
    seen = []
    handle = linear.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    x = torch.randn(3, 5, 6)
    with liar._computes_nothing(linear):
        assert torch.equal(linear(x), torch.zeros(3, 5, 4))
    assert torch.allclose(linear(x), x @ linear.weight.T + linear.bias) and "forward" not in linear.__dict__
    assert len(seen) == 2 and seen[0] is x
    handle.remove()

    wrapped = linear.forward  # a wrapper that accelerate's hooks set on the instance is put back
    linear.forward = lambda x: wrapped(x) + 1
    own = linear.forward
    with liar._computes_nothing(linear):
        assert not linear(x).any()
    assert linear.forward is own


def _ridge_statistics(seed: int):
    generator = torch.Generator().manual_seed(seed)
    width, mix = 40, torch.randn(30, 10, generator=generator)
    stats = InputStatistics(width, holdout_every=4)
    for _ in range(8):  # float32 activations, as on the CPU: the damping search runs in float32 there
        x = torch.randn(16, 30, generator=generator)
        stats.add(torch.cat([x, x @ mix + torch.randn(16, 10, generator=generator)], 1))
    return stats, torch.randn(6, width, generator=generator, dtype=torch.float64)


def test_a_float32_damping_search_picks_the_float64_damping_and_so_gives_the_same_weights(monkeypatch):
    from prunekit.methods.liar import reconstruction

    assert reconstruction.search_precision(torch.device("cpu")) == torch.float32
    keep = torch.arange(30)
    for seed in range(4):
        stats, weight = _ridge_statistics(seed)
        fast = fold_pruned_inputs(weight, keep, stats, "liar", damping="auto")
        fast_errors = damping_errors(weight, keep, stats, with_bias=True, exhaustive=True)
        with monkeypatch.context() as patched:
            patched.setattr(reconstruction, "search_precision", lambda device: torch.float64)
            exact = fold_pruned_inputs(weight, keep, stats, "liar", damping="auto")
            exact_errors = damping_errors(weight, keep, stats, with_bias=True, exhaustive=True)
        assert fast.damping == exact.damping and torch.equal(fast.weight, exact.weight) and torch.equal(fast.bias, exact.bias)
        assert all(fast_errors[d] == pytest.approx(exact_errors[d], rel=1e-4) for d in exact_errors)


def test_a_candidate_that_float32_cannot_factorise_is_scored_in_float64(monkeypatch):
    from prunekit.methods.liar import reconstruction

    stats, weight = _ridge_statistics(0)
    keep = torch.arange(30)
    exact_solve = reconstruction._solve_psd

    def float32_fails_below_1e_2(matrix, rhs, damping, scale_dims):
        if matrix.dtype == torch.float32 and damping < 1e-2:  # as a factorisation that needs more damping would
            solution, _, lam = exact_solve(matrix, rhs, damping * 10, scale_dims)
            return solution, damping * 10, lam
        return exact_solve(matrix, rhs, damping, scale_dims)

    monkeypatch.setattr(reconstruction, "_solve_psd", float32_fails_below_1e_2)
    retried = damping_errors(weight, keep, stats, with_bias=True, exhaustive=True)
    monkeypatch.setattr(reconstruction, "_solve_psd", exact_solve)
    monkeypatch.setattr(reconstruction, "search_precision", lambda device: torch.float64)
    exact = damping_errors(weight, keep, stats, with_bias=True, exhaustive=True)
    assert all(retried[d] == pytest.approx(exact[d], rel=1e-4) for d in exact)


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_the_attention_statistics_pass_skips_the_mlp_and_gives_the_same_weights(family, ids, monkeypatch):
    """The attention pass's output is thrown away, so its MLP returns zeros: the MLP then runs once per
    batch (to move the hidden states on), and the pruned weights are those of a pass that runs it."""
    windows = windows_of(ids)
    batches = ids.shape[0]  # batch_size 1

    def prune(skip: bool):
        model = tiny_model(family)
        calls = []
        gate = model.model.layers[0].mlp.gate_proj
        gate.register_forward_hook(lambda module, args, out: calls.append(1))
        if not skip:
            full = liar.input_statistics
            monkeypatch.setattr(liar, "input_statistics", lambda *args, idle=None, **kwargs: full(*args, **kwargs))
        prune_width(model, windows, head_ratio=0.5, progress=False)
        monkeypatch.undo()
        return model.state_dict(), len(calls)

    skipped, calls_skipped = prune(skip=True)
    full, calls_full = prune(skip=False)
    assert calls_skipped == batches and calls_full == 2 * batches
    assert skipped.keys() == full.keys() and all(torch.equal(skipped[k], full[k]) for k in full)


def test_a_whole_mlp_that_computes_nothing_returns_zeros_of_its_input_width():
    mlp = torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.Linear(10, 6))
    x = torch.randn(2, 3, 6)
    with liar._computes_nothing(mlp):
        assert torch.equal(mlp(x), torch.zeros(2, 3, 6))
    assert mlp(x).abs().sum() > 0 and "forward" not in mlp.__dict__
