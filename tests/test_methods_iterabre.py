import copy
import json
import logging

import pytest
import torch

from prunekit.data.windows import TokenWindows
from prunekit.errors import ComputationError, PrunekitError
from prunekit.methods.iterabre import IterabreConfig, blocks_next_to, iterabre, loop
from prunekit.methods.iterabre.loop import LoopSettings
from prunekit.models.adapters import ModelAdapter
from prunekit.recovery import RecoveryConfig, dense_teacher, recover
from prunekit.recovery.checkpoints import RecoveryInterrupted
from prunekit.scoring.blocks import scan_blocks

from conftest import VOCAB, SignalAt, tiny_model


def windows(count, seq_len=16, seed=0):
    ids = torch.randint(3, VOCAB, (count, seq_len), generator=torch.Generator().manual_seed(seed))
    return TokenWindows(ids, "random", ids.numel())


def settings(remove=2, **recovery):
    base = {"tokens": 2 * 8 * 16, "seq_len": 16, "micro_batch_size": 2, "grad_accumulation": 1, "learning_rate": 1e-3}
    # the paper's loop (a recovery after every removal), which these tests exercise; the default spends it all at the end
    return IterabreConfig(remove=remove, recovery=RecoveryConfig(**{**base, **recovery}), final_share=0.0)


def run(model, run_dir, plan_settings=None, **kwargs):
    teacher = dense_teacher(tiny_model("llama"))
    return iterabre(
        model,
        teacher,
        windows(4, seed=1),
        windows(16, seed=2),
        plan_settings or settings(),
        run_dir=str(run_dir),
        heldout=windows(2, seed=3),
        progress=False,
        **kwargs,
    )


def test_each_iteration_removes_one_block_recovers_and_is_logged(tmp_path):
    model = tiny_model("llama")
    plan = run(model, tmp_path / "run")
    assert ModelAdapter(model).num_blocks == 2 and plan.method == "iterabre" and len(plan.steps) == 2
    assert sorted(s["removed"][0] for s in plan.steps) == plan.removed_blocks
    first, second = plan.steps
    assert set(first["scores"]) == {"0", "1", "2", "3"} and len(second["scores"]) == 3
    assert str(first["removed"][0]) not in second["scores"]  # later scores are of the pruned model
    for step in plan.steps:
        assert step["recovery"]["tokens"] == 128 and step["loss_after_recovery"] < step["loss_before_recovery"]
        assert step["heldout_perplexity_after_recovery"] > 0 and step["seconds"] > 0
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["status"] == "finished" and state["checkpoint"] == "checkpoint-002"
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-002"]


def test_resume_after_an_interruption_gives_the_uninterrupted_result(tmp_path):
    uninterrupted = tiny_model("llama")
    run(uninterrupted, tmp_path / "a")

    def stop_after_first(entry):
        if entry["iteration"] == 1:
            raise KeyboardInterrupt

    interrupted = tiny_model("llama")
    with pytest.raises(KeyboardInterrupt):
        run(interrupted, tmp_path / "b", on_iteration=stop_after_first)
    assert json.loads((tmp_path / "b" / "state.json").read_text())["checkpoint"] == "checkpoint-001"
    resumed = tiny_model("llama")  # a fresh dense model, as after a restart
    plan = run(resumed, tmp_path / "b", resume=True)
    assert len(plan.steps) == 2
    a, b = uninterrupted.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def stopped_inside_the_second_recovery(run_dir, monkeypatch, plan_settings=None) -> float:
    """Run until SIGTERM lands inside the second iteration's recovery (after slow steps); returns the seconds it saved."""
    calls = []

    def second_recovery_stops(model, windows, config, **kwargs):
        calls.append(config.seed)
        if len(calls) == 2:
            windows = SignalAt(windows, at=3, seed=config.seed, delay=0.5)
        return recover(model, windows, config, **kwargs)

    monkeypatch.setattr(loop, "recover", second_recovery_stops)
    with pytest.raises(RecoveryInterrupted):
        run(tiny_model("llama"), run_dir, plan_settings)
    monkeypatch.setattr(loop, "recover", recover)
    saved = sorted((run_dir / "recovery-002").glob("checkpoint-*"))
    assert len(saved) == 1
    return json.loads((saved[0] / "trainer_state.json").read_text())["seconds"]


def test_a_run_stopped_inside_a_recovery_resumes_from_its_checkpoint_and_counts_the_time_before(tmp_path, monkeypatch):
    uninterrupted = tiny_model("llama")
    run(uninterrupted, tmp_path / "a")
    earlier = stopped_inside_the_second_recovery(tmp_path / "b", monkeypatch)
    assert json.loads((tmp_path / "b" / "state.json").read_text())["pending"]["iteration"] == 2
    scans = []
    monkeypatch.setattr(loop, "scan_blocks", lambda *a, **k: scans.append(1) or scan_blocks(*a, **k))
    resumed = tiny_model("llama")
    plan = run(resumed, tmp_path / "b", resume=True)
    assert scans == []  # the block the stopped process chose is the one removed again, without a new scan
    a, b = uninterrupted.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    second = plan.steps[1]
    assert earlier >= 1.0 and second["recovery"]["seconds"] > earlier
    assert second["seconds"] >= second["scan_seconds"] + second["recovery"]["seconds"]
    assert plan.scan_seconds == pytest.approx(sum(step["seconds"] for step in plan.steps))
    # the stopped process's share: the first iteration, the second's scan and its recovery's saved steps
    assert plan.seconds_before_resume == pytest.approx(plan.steps[0]["seconds"] + second["scan_seconds"] + earlier)
    assert "pending" not in json.loads((tmp_path / "b" / "state.json").read_text())


def test_a_run_resumed_with_another_learning_rate_starts_the_stopped_recovery_over_at_it(tmp_path, monkeypatch, caplog):
    plan_settings = settings()

    def lower_the_rate(entry):  # the rate a resume below asks for, from the second iteration on
        plan_settings.recovery.learning_rate = 2e-4

    reference = tiny_model("llama")
    run(reference, tmp_path / "a", plan_settings, on_iteration=lower_the_rate)
    stopped_inside_the_second_recovery(tmp_path / "b", monkeypatch)
    resumed = tiny_model("llama")
    with caplog.at_level(logging.WARNING):
        plan = run(resumed, tmp_path / "b", settings(learning_rate=2e-4), resume=True)
    assert "iteration 2: its recovery starts over (learning_rate 0.001 -> 0.0002)" in caplog.text
    assert [step["recovery"]["learning_rate"] for step in plan.steps] == [1e-3, 2e-4]
    a, b = reference.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_other_settings_and_a_fresh_start_refuses_an_old_run(tmp_path):
    run(tiny_model("llama"), tmp_path / "run")
    with pytest.raises(PrunekitError, match="different settings"):
        run(tiny_model("llama"), tmp_path / "run", settings(remove=3), resume=True)
    with pytest.raises(PrunekitError, match="`resume`"):
        run(tiny_model("llama"), tmp_path / "run")
    with pytest.raises(PrunekitError, match="nothing to resume"):
        run(tiny_model("llama"), tmp_path / "empty", resume=True)


def test_protected_blocks_are_never_removed_and_several_go_per_step(tmp_path):
    model = tiny_model("llama")
    protected = settings(remove=2)
    protected.protect, protected.per_step = (0, 3), 2
    plan = run(model, tmp_path / "run", protected)
    assert plan.removed_blocks == [1, 2] and len(plan.steps) == 1


def test_divergence_stops_keeps_the_last_good_checkpoint_and_writes_nothing_else(tmp_path):
    model = tiny_model("llama")

    def make_lr_explode(entry):
        plan_settings.recovery.learning_rate = 1e30
        plan_settings.recovery.max_grad_norm = 0.0

    plan_settings = settings(remove=2, warmup_ratio=0.0)
    with pytest.raises(ComputationError, match=r"iteration 2: recovery diverged .* learning rate \d.*e\+29.*`resume`"):
        run(model, tmp_path / "run", plan_settings, on_iteration=make_lr_explode)
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["status"] == "diverged" and state["checkpoint"] == "checkpoint-001" and len(state["iterations"]) == 1
    assert (tmp_path / "run" / "checkpoint-001" / "model.safetensors").is_file()


def test_bad_settings_are_refused_before_any_work(tmp_path):
    model = tiny_model("llama")
    with pytest.raises(PrunekitError, match="must be smaller than the number of blocks"):
        run(model, tmp_path / "a", settings(remove=4))
    bad = settings(remove=2)
    bad.protect = (0, 1, 2)
    with pytest.raises(PrunekitError, match="unprotected"):
        run(model, tmp_path / "b", bad)
    assert ModelAdapter(model).num_blocks == 4


def test_blocks_next_to_removed_positions():
    assert blocks_next_to([2], 5) == [1, 2]
    assert blocks_next_to([0], 3) == [0]
    assert blocks_next_to([1, 2], 2) == [0, 1]
    assert blocks_next_to([5], 5) == [4]


def test_the_teacher_is_a_frozen_copy():
    model = tiny_model("llama")
    teacher = dense_teacher(model)
    assert teacher is not model and not any(p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), copy.deepcopy(teacher).state_dict().values()))


def test_a_final_share_of_the_budget_recovers_every_block_after_the_last_removal_and_resumes(tmp_path):
    plan_settings = settings(tokens=4 * 8 * 16)
    plan_settings.final_share = 0.5
    model = tiny_model("llama")
    plan = run(model, tmp_path / "run", plan_settings)
    removals, final = plan.steps[:-1], plan.steps[-1]
    assert len(removals) == 2 and final["final"] and final["removed"] == [] and final["recovery"]["scope"] == "blocks"
    assert [s["recovery"]["tokens_budget"] for s in plan.steps] == [128, 128, 256] and plan.removed_blocks == sorted(
        s["removed"][0] for s in removals
    )
    resumed = tiny_model("llama")
    again = run(resumed, tmp_path / "run", plan_settings, resume=True)  # a finished run resumes to the same weights
    assert len(again.steps) == 3 and all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), resumed.state_dict().values()))
    assert plan.seconds_before_resume == 0.0 and again.seconds_before_resume == pytest.approx(again.scan_seconds)  # all done before


def test_final_share_1_only_rescores_between_removals_and_spends_the_whole_budget_after_the_last(tmp_path):
    plan_settings = settings(tokens=2 * 8 * 16)
    plan_settings.final_share, plan_settings.schedule = 1.0, "continuous"
    resolved = LoopSettings.of(plan_settings, num_blocks=4, dense_parameters=1)
    assert [resolved.schedule_window(i)["schedule_start"] for i in (1, 2, 3)] == [0, 0, 0]  # the iterations take no steps
    model = tiny_model("llama")
    plan = run(model, tmp_path / "run", plan_settings)
    removals, final = plan.steps[:-1], plan.steps[-1]
    assert [s["recovery"]["steps"] for s in removals] == [0, 0] and final["recovery"]["tokens_budget"] == 256
    assert all(s["heldout_perplexity_after_recovery"] == s["heldout_perplexity_after_removal"] for s in removals)
    assert final["loss_after_recovery"] < final["loss_before_recovery"] and ModelAdapter(model).num_blocks == 2
    resumed = tiny_model("llama")
    again = run(resumed, tmp_path / "run", plan_settings, resume=True)
    assert len(again.steps) == 3 and all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), resumed.state_dict().values()))

    def interrupt(entry):
        assert not any(p.name.startswith("checkpoint") for p in (tmp_path / "cut").iterdir())  # nothing trained, no weights written
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tiny_model("llama"), tmp_path / "cut", plan_settings, on_iteration=interrupt)
    cut = tiny_model("llama")
    run(cut, tmp_path / "cut", plan_settings, resume=True)  # rebuilt from the input: the same blocks go, then the one recovery
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), cut.state_dict().values()))
    plan_settings.final_share = 1.5
    with pytest.raises(PrunekitError, match=r"final_share.*\[0, 1\]"):
        plan_settings.check()


def test_the_continuous_schedule_places_each_iteration_in_one_warm_up_and_cosine_decay():
    import math

    from prunekit.recovery.trainer import _schedule

    plan_settings = settings(tokens=3 * 8 * 16, warmup_ratio=0.2)  # 2 removals and a final pass: 128 tokens, 4 steps each
    plan_settings.schedule, plan_settings.final_share = "continuous", 1 / 3
    windows_ = [LoopSettings.of(plan_settings, num_blocks=4, dense_parameters=1).schedule_window(i) for i in (1, 2, 3)]
    assert [w["schedule_start"] for w in windows_] == [0, 4, 8] and {w["schedule_steps"] for w in windows_} == {12}
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    second = _schedule(optimizer, RecoveryConfig(tokens=128, seq_len=16, grad_accumulation=1, warmup_ratio=0.2, **windows_[1]), 4)
    rates = []
    for _ in range(4):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        second.step()
    warmup = int(0.2 * 12)
    expected = [0.5 * (1 + math.cos(math.pi * (s - warmup) / (12 - warmup))) for s in range(4, 8)]
    assert rates == pytest.approx(expected) and rates[0] < 1.0  # no second warm-up: the decay goes on
    plan_settings.schedule = "sometimes"
    with pytest.raises(PrunekitError, match="schedule 'sometimes' is unknown"):
        plan_settings.check()


def test_without_a_learning_rate_every_iteration_uses_the_one_chosen_for_the_dense_model(tmp_path, monkeypatch):
    sizes = []
    monkeypatch.setattr("prunekit.recovery.config.default_learning_rate", lambda scope, n: sizes.append(n) or 2e-3)
    plan = run(tiny_model("llama"), tmp_path / "run", settings(learning_rate=None))
    assert {step["recovery"]["learning_rate"] for step in plan.steps} == {2e-3}
    assert len(set(sizes)) == 1  # the dense teacher's size, not the shrinking student's
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["settings"]["learning_rate"] == 2e-3


def test_angular_inside_the_loop_scores_each_block_alone(tmp_path):
    model = tiny_model("llama")
    expected = scan_blocks(model, windows(4, seed=1), "angular", progress=False).scores
    plan = run(model, tmp_path / "run", IterabreConfig(remove=1, metric="angular", recovery=settings().recovery, final_share=0.0))
    assert [plan.steps[0]["scores"][str(i)] for i in range(4)] == pytest.approx(expected)
    assert plan.removed_blocks == [min(range(4), key=expected.__getitem__)]


def test_schedule_and_final_share_are_checked_with_the_config():
    """Refused when the config is checked (before a model is loaded), not when the loop starts."""
    from prunekit.errors import PrunekitError
    from prunekit.methods.iterabre import IterabreConfig

    with pytest.raises(PrunekitError, match="schedule 'cosine' is unknown; use one of restart, continuous"):
        IterabreConfig(remove=2, schedule="cosine").check()
    with pytest.raises(PrunekitError, match=r"final_share 1.5 must be in \[0, 1\]"):
        IterabreConfig(remove=2, final_share=1.5).check()
