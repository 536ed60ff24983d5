"""prunekit.prune / prunekit.save: every registered method, recipes, plans and their re-application."""

from __future__ import annotations

import json

import pytest
import torch

import prunekit
from prunekit import (
    ExtendConfig,
    FlexiGPTConfig,
    IterabreConfig,
    LiarConfig,
    ParameterError,
    Plan,
    PrunekitError,
    RecoveryConfig,
    ShortGPTConfig,
    TokenWindows,
)
from prunekit.methods import method_names, method_spec
from prunekit.models.adapters import ModelAdapter

from conftest import VOCAB, SignalAt, tiny_model

TRAIN = {"tokens": 64, "seq_len": 16, "grad_accumulation": 1}


def windows_of(ids):
    return TokenWindows(ids, "random ids", ids.numel())


@pytest.fixture
def recovery_windows():
    torch.manual_seed(2)
    return windows_of(torch.randint(3, VOCAB, (8, 16)))


def test_every_method_is_registered_with_a_config_that_checks_itself():
    assert set(method_names()) >= {"shortgpt", "angular", "sleb", "liar", "iterabre", "flexigpt", "extend", "recover"}
    for name in method_names():
        spec = method_spec(name)
        assert spec.config_cls.__doc__ and callable(spec.run)


@pytest.mark.parametrize(
    "method,options",
    [
        ("shortgpt", {"remove": 1}),
        ("angular", {"remove": 2}),
        ("sleb", {"remove": 1}),
        ("liar", {"ffn_ratio": 0.25}),
        ("iterabre", {"remove": 1, "recovery": TRAIN}),
        ("flexigpt", {"remove": 1, "recovery": TRAIN}),
        ("extend", {"to_blocks": 5, "recovery": TRAIN}),
    ],
)
def test_every_method_runs_through_prune_and_leaves_the_input_alone(method, options, ids, recovery_windows):
    model = tiny_model("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = prunekit.prune(model, method, windows_of(ids), recovery_data=recovery_windows, progress=False, **options)
    assert result.plan.method == method and result.plan.stages[0]["config"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert result.plan.params_before == prunekit.parameter_count(model)
    with torch.no_grad():
        assert torch.isfinite(result.model(ids).logits).all()
    if method in ("shortgpt", "angular", "sleb", "iterabre"):
        assert result.plan.num_blocks_after == 4 - len(result.plan.removed_blocks)
    if method == "extend":
        assert result.plan.num_blocks_after == 5


def test_unknown_options_and_bad_values_name_the_parameter(ids):
    model = tiny_model("llama")
    with pytest.raises(ParameterError, match="^ratioo is not an option of liar"):
        prunekit.prune(model, "liar", windows_of(ids), ratioo=0.3)
    with pytest.raises(ParameterError, match="^ffn_ratio 1.5 must be in"):
        prunekit.prune(model, LiarConfig(ffn_ratio=1.5), windows_of(ids))
    with pytest.raises(ParameterError, match="^method 'magic' is unknown"):
        prunekit.prune(model, "magic", windows_of(ids))
    with pytest.raises(ParameterError, match="^data is missing"):
        prunekit.prune(model, "shortgpt", remove=1)


def test_a_recipe_runs_its_stages_in_order_and_the_plan_lists_them(ids, recovery_windows, tmp_path, tiny_tokenizer):
    model = tiny_model("llama", num_layers=5)
    recipe = [{"method": "shortgpt", "remove": 2}, {"method": "liar", "ffn_ratio": 0.25}, {"recover": TRAIN}]
    result = prunekit.prune(model, recipe, windows_of(ids), recovery_data=recovery_windows, progress=False)
    plan = result.plan
    assert [s["method"] for s in plan.stages] == ["shortgpt", "liar", "recover"] and plan.method == "recipe"
    assert plan.num_blocks_after == 3 and len(plan.removed_blocks) == 2 and not plan.reapplicable
    assert ModelAdapter(result.model).layers[0].mlp.down_proj.in_features == 96
    out = prunekit.save(result, tmp_path / "out", tiny_tokenizer)
    saved = json.loads((out / "prunekit_plan.json").read_text())
    assert [s["method"] for s in saved["stages"]] == ["shortgpt", "liar", "recover"]
    reloaded = prunekit.load_model(str(out), device="cpu", progress=False).model
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, result.model(ids).logits, atol=1e-5)


def test_recipe_files_in_yaml_and_json_give_the_same_configs(tmp_path):
    from prunekit.methods.recipe import recipe_configs

    (tmp_path / "r.yaml").write_text("- {method: shortgpt, remove: 4}\n- {method: liar, ratio: 0.2}\n- recover: {tokens: 200000}\n")
    (tmp_path / "r.json").write_text(
        json.dumps({"stages": [{"method": "shortgpt", "remove": 4}, {"liar": {"ratio": 0.2}}, {"method": "recover", "tokens": 200000}]})
    )
    expected = [ShortGPTConfig(remove=4), LiarConfig(ratio=0.2), RecoveryConfig(tokens=200000)]
    assert recipe_configs(tmp_path / "r.yaml") == expected == recipe_configs(str(tmp_path / "r.json"))
    (tmp_path / "bad.yaml").write_text("- {method: liar, ratio: 0.2, speed: fast}\n")
    with pytest.raises(ParameterError, match="speed is not an option of liar .recipe stage 1."):
        recipe_configs(tmp_path / "bad.yaml")
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(PrunekitError, match="is not valid JSON"):
        recipe_configs(tmp_path / "broken.json")


def test_a_saved_depth_plan_reapplies_without_data_and_a_width_stage_reruns_with_it(ids, tmp_path):
    model = tiny_model("llama", num_layers=5)
    first = prunekit.prune(model, [ShortGPTConfig(remove=2), LiarConfig(ffn_ratio=0.25)], windows_of(ids), progress=False)
    first.plan.save(tmp_path / "plan.json")
    plan = Plan.load(tmp_path / "plan.json")
    depth_only = prunekit.prune(model, [ShortGPTConfig(remove=2)], windows_of(ids), progress=False)
    again = prunekit.prune(model, plan=Plan.from_dict({**depth_only.plan.to_dict()}))
    assert again.plan.removed_blocks == depth_only.plan.removed_blocks and again.plan.reapplicable
    with pytest.raises(PrunekitError, match="stage 'liar' cannot be re-applied"):
        prunekit.prune(model, plan=plan)
    rerun = prunekit.prune(model, plan=plan, data=windows_of(ids), progress=False)
    with torch.no_grad():
        assert torch.allclose(rerun.model(ids).logits, first.model(ids).logits, atol=1e-5)


def test_a_liar_plan_reruns_on_the_data_it_recorded_and_one_without_a_record_is_refused(ids, tmp_path, tiny_tokenizer):
    text = tmp_path / "calibration.txt"
    text.write_text(" ".join(f"word{i % 37} and{i % 11}" for i in range(3000)))
    model = tiny_model("llama")
    windows = prunekit.load_windows(str(text), tiny_tokenizer, purpose="calibration", num_windows=6, seq_len=24, seed=3)
    first = prunekit.prune(model, LiarConfig(ffn_ratio=0.25), windows, progress=False)
    recorded = first.plan.calibration
    assert recorded["spec"] == str(text.resolve()) and recorded["seed"] == 3 and recorded["windows"] == 6
    again = prunekit.prune(model, plan=Plan.from_dict(first.plan.to_dict()), tokenizer=tiny_tokenizer, progress=False)
    with torch.no_grad():
        assert torch.equal(again.model(ids).logits, first.model(ids).logits)
    unrecorded = prunekit.prune(model, LiarConfig(ffn_ratio=0.25), windows_of(ids), progress=False).plan
    with pytest.raises(PrunekitError, match="stage was computed on random ids; pass that data"):
        prunekit.prune(model, plan=unrecorded, tokenizer=tiny_tokenizer)
    edited = {**first.plan.to_dict(), "calibration": {**recorded, "windows": "6"}}
    with pytest.raises(PrunekitError, match="calibration windows must be a positive whole number"):
        prunekit.prune(model, plan=Plan.from_dict(edited), tokenizer=tiny_tokenizer)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format": "2"}, "plan format must be 1 or 2"),
        ({"format": 2.5}, "plan format must be 1 or 2"),
        ({"format": 9}, "newer than this prunekit reads"),
        ({"stages": [{"method": "shortgpt", "config": [1], "details": {}}]}, "plan stages must be a non-empty list"),
        ({"stages": [{"method": "shortgpt", "config": {}, "details": "x"}]}, "plan stages must be a non-empty list"),
        ({"versions": [1]}, "plan versions must be an object"),
        ({"num_blocks_before": "4"}, "num_blocks_before must be a positive whole number"),
    ],
)
def test_hand_edited_staged_plans_get_one_line_errors(ids, change, message):
    plan = prunekit.prune(tiny_model("llama"), "shortgpt", windows_of(ids), remove=1, progress=False).plan.to_dict()
    with pytest.raises(PrunekitError, match=message):
        Plan.from_dict({**plan, **change})


def test_a_plan_for_another_model_and_a_stage_without_its_blocks_are_refused(ids):
    model = tiny_model("llama")
    plan = prunekit.prune(model, "shortgpt", windows_of(ids), remove=1, progress=False).plan.to_dict()
    with pytest.raises(PrunekitError, match="made for a model with 4 blocks, this one has 6"):
        prunekit.prune(tiny_model("llama", num_layers=6), plan=Plan.from_dict(plan))
    stage = {**plan["stages"][0], "details": None}
    with pytest.raises(PrunekitError, match="has no details to re-apply"):
        prunekit.prune(model, plan=Plan.from_dict({**plan, "stages": [stage]}))


def test_format_one_depth_plans_still_load_and_apply(ids, tmp_path):
    model = tiny_model("llama")
    old = {"method": "shortgpt", "removed_blocks": [1, 2], "num_blocks_before": 4, "format": 1}
    (tmp_path / "plan.json").write_text(json.dumps(old))
    result = prunekit.prune(model, plan=Plan.load(tmp_path / "plan.json"))
    assert result.plan.removed_blocks == [1, 2] and ModelAdapter(result.model).num_blocks == 2


def test_recovery_goes_to_the_method_that_trains_or_becomes_a_final_stage(ids, recovery_windows):
    model = tiny_model("llama")
    data = windows_of(ids)
    result = prunekit.prune(
        model, "shortgpt", data, remove=1, recovery=RecoveryConfig(**TRAIN), recovery_data=recovery_windows, progress=False
    )
    assert [s["method"] for s in result.plan.stages] == ["shortgpt", "recover"]
    result = prunekit.prune(model, FlexiGPTConfig(remove=1), data, recovery=TRAIN, recovery_data=recovery_windows, progress=False)
    assert [s["method"] for s in result.plan.stages] == ["flexigpt"] and result.plan.stages[0]["details"]["recovery"]["tokens"] == 64
    own = prunekit.prune(model, "flexigpt", data, remove=1, recovery={"tokens": 64, "seq_len": 16}, recovery_data=recovery_windows)
    trained = own.plan.stages[0]["details"]["recovery"]["config"]
    assert trained["tokens"] == 64 and trained["scope"] == "adapters"  # a token count or fields go over the method's own defaults
    assert trained["learning_rate"] == 4e-3 and trained["norm_scale_learning_rate"] == 1e-1
    with pytest.raises(ParameterError, match="tokenz.*is not a setting of recovery"):
        prunekit.prune(model, "flexigpt", data, remove=1, recovery={"tokenz": 64})
    untrained = prunekit.prune(model, "flexigpt", data, remove=1, recovery=0, progress=False)  # as --recovery-tokens 0
    assert untrained.plan.stages[0]["details"]["recovery"] is None
    assert [s["method"] for s in prunekit.prune(model, "shortgpt", data, remove=1, recovery=0).plan.stages] == ["shortgpt"]


def test_method_recover_with_a_recovery_runs_that_one_recovery_not_a_default_one_first(ids, recovery_windows):
    model = tiny_model("llama")
    data = windows_of(ids)
    next_token = RecoveryConfig(**TRAIN, kd_weight=0.0, lm_weight=1.0, learning_rate=3e-4)
    result = prunekit.prune(model, "recover", data, recovery=next_token, recovery_data=recovery_windows, progress=False)
    assert [s["method"] for s in result.plan.stages] == ["recover"]
    assert result.plan.stages[0]["config"]["kd_weight"] == 0.0 and result.plan.stages[0]["details"]["tokens"] == 64
    fields = prunekit.prune(model, "recover", data, lm_weight=1.0, recovery=TRAIN, recovery_data=recovery_windows, progress=False)
    assert [s["method"] for s in fields.plan.stages] == ["recover"]  # a token count or fields go over the stage's options
    assert fields.plan.stages[0]["config"]["lm_weight"] == 1.0 and fields.plan.stages[0]["config"]["tokens"] == 64
    with pytest.raises(ParameterError, match="0 leaves method 'recover' nothing to do"):
        prunekit.prune(model, "recover", data, recovery=0)
    with pytest.raises(ParameterError, match=r"options \(lm_weight\) both set the recovery"):
        prunekit.prune(model, "recover", data, lm_weight=1.0, recovery=next_token)


def test_inplace_prunes_the_given_model_and_distils_from_a_copy_taken_first(ids, recovery_windows):
    model = tiny_model("llama")
    result = prunekit.prune(
        model,
        IterabreConfig(remove=1, recovery=RecoveryConfig(**TRAIN)),
        windows_of(ids),
        recovery_data=recovery_windows,
        inplace=True,
        progress=False,
    )
    assert result.model is model and ModelAdapter(model).num_blocks == 3


def test_save_picks_the_shared_block_format_and_extend_needs_no_data(tmp_path, tiny_tokenizer):
    model = tiny_model("llama")
    result = prunekit.prune(model, ExtendConfig(to_blocks=6, recovery=None))
    out = prunekit.save(result, tmp_path / "ext", tiny_tokenizer)
    assert (out / "prunekit_shared_blocks.json").is_file()
    reloaded = prunekit.load_model(str(out), device="cpu", progress=False).model
    assert ModelAdapter(reloaded).num_blocks == 6


def test_an_encoder_goes_through_the_same_call(bert_tokenizer, tmp_path):
    from conftest import tiny_bert

    model = tiny_bert()
    ids = torch.randint(5, 300, (4, 20))
    result = prunekit.prune(model, "liar", windows_of(ids), tokenizer=bert_tokenizer, ffn_ratio=0.5, progress=False)
    assert result.plan.stages[0]["details"]["intermediate_size_after"] == 64
    out = prunekit.save(result, tmp_path / "enc", bert_tokenizer)
    assert (out / "config.json").is_file()


def test_iterabre_keeps_its_iterations_in_the_jobs_run_directory_and_a_resume_continues(ids, recovery_windows, tmp_path):
    config = IterabreConfig(remove=2, final_share=0.0, recovery=RecoveryConfig(**TRAIN))
    job = dict(recovery_data=recovery_windows, progress=False, run_dir=tmp_path / "run")
    unbroken = prunekit.prune(tiny_model("llama"), config, windows_of(ids), **{**job, "run_dir": tmp_path / "other"})
    state = json.loads((tmp_path / "other" / "stage-1" / "state.json").read_text())
    assert state["status"] == "finished" and len(state["iterations"]) == 2
    with pytest.raises(PrunekitError, match="already holds a run"):
        prunekit.prune(tiny_model("llama"), config, windows_of(ids), **{**job, "run_dir": tmp_path / "other"})
    resumed = prunekit.prune(tiny_model("llama"), config, windows_of(ids), **{**job, "run_dir": tmp_path / "other"}, resume=True)
    assert resumed.plan.removed_blocks == unbroken.plan.removed_blocks
    fresh = prunekit.prune(tiny_model("llama"), config, windows_of(ids), **job, resume=True)  # nothing there yet: starts
    assert fresh.plan.removed_blocks == unbroken.plan.removed_blocks


def test_a_stage_resumed_after_a_stop_counts_the_time_the_stopped_process_spent_on_it(ids, recovery_windows, tmp_path, monkeypatch):
    from prunekit.methods import recovery_stage
    from prunekit.recovery import recover
    from prunekit.recovery.checkpoints import RecoveryInterrupted

    def stopped_at_the_third_step(model, windows, config, **kwargs):
        return recover(model, SignalAt(windows, at=3, seed=config.seed, delay=0.5), config, **kwargs)

    job = dict(recovery=TRAIN, recovery_data=recovery_windows, progress=False, run_dir=tmp_path / "run")
    monkeypatch.setattr(recovery_stage, "recover", stopped_at_the_third_step)
    with pytest.raises(RecoveryInterrupted):
        prunekit.prune(tiny_model("llama"), "recover", windows_of(ids), **job)
    monkeypatch.setattr(recovery_stage, "recover", recover)
    stage = prunekit.prune(tiny_model("llama"), "recover", windows_of(ids), **job, resume=True).plan.stages[0]
    assert 0 < stage["details"]["resumed_from_step"] < stage["details"]["steps"] and stage["details"]["seconds_before_resume"] >= 1.0
    assert stage["seconds"] >= stage["details"]["seconds"]  # this process's time alone is a fraction of it


def test_a_model_path_and_a_data_spec_are_loaded_and_wrong_types_are_named(tiny_checkpoint, ids):
    result = prunekit.prune(str(tiny_checkpoint), "shortgpt", "builtin", remove=1, progress=False)
    assert ModelAdapter(result.model).num_blocks == 3 and result.plan.model == str(tiny_checkpoint)
    assert result.plan.calibration["windows"] == 16  # the method's default count
    with pytest.raises(ParameterError, match="^model must be a transformers model"):
        prunekit.prune(42, "shortgpt", windows_of(ids), remove=1)
    with pytest.raises(ParameterError, match="^data is text .*pass tokenizer="):
        prunekit.prune(tiny_model("llama"), "shortgpt", "builtin", remove=1)
    with pytest.raises(ParameterError, match="^data must be TokenWindows"):
        prunekit.prune(tiny_model("llama"), "shortgpt", ids, remove=1)
    for bad, message in [("2", "the text '2'"), (2.5, "whole number, got 2.5"), (float("nan"), "finite")]:
        with pytest.raises(ParameterError, match=f"^remove must be a .*{message}"):
            prunekit.prune(tiny_model("llama"), "shortgpt", windows_of(ids), remove=bad)


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("bomb.yaml", "a: &a [1, 1, 1]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b]\n", "anchor or alias"),
        ("self.yaml", "- &s {method: shortgpt, again: *s}\n", "anchor or alias"),
        ("deep.yaml", "[" * 5000 + "]" * 5000 + "\n", "nests deeper than 64"),
        ("deep.json", "[" * 100000 + "]" * 100000, "nests deeper than 64"),
        ("text.json", '[{"method": "shortgpt", "remove": "2"}]', "remove must be a whole number, got the text '2'"),
        ("nan.yaml", "- {method: shortgpt, remove: .nan}\n", "remove must be a finite"),
        ("tokens.yaml", "- {method: shortgpt, remove: 1}\n- {recover: {tokens: '2000'}}\n", "tokens must be a whole number"),
    ],
)
def test_recipe_files_with_hostile_or_careless_values_are_one_line_errors(name, text, message, tmp_path):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises((PrunekitError, ParameterError), match=message) as refused:
        prunekit.prune(tiny_model("llama"), str(path), None)
    assert "\n" not in str(refused.value)


def test_a_huge_recipe_file_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("- {method: shortgpt, remove: 1}\n" * 40000)
    with pytest.raises(PrunekitError, match="a recipe lists a few stages"):
        prunekit.prune(tiny_model("llama"), str(path), None)
