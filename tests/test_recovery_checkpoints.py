import copy
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from pydoc_data.topics import topics

import pytest
import torch
import transformers

from prunekit.data.windows import TokenWindows
from prunekit.errors import PrunekitError
from prunekit.models.surgery import remove_blocks
from prunekit.recovery import RecoveryConfig, recover
from prunekit.recovery.checkpoints import Checkpointing, RecoveryInterrupted, has_checkpoint

from conftest import VOCAB, SignalAt, tiny_config, tiny_model

PRUNEKIT = [sys.executable, "-m", "prunekit.cli"]
CPU_ONLY = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # CPU processes (gloo) on any machine, one GPU or none


def windows(count=24, seq_len=16):
    ids = torch.randint(3, VOCAB, (count, seq_len), generator=torch.Generator().manual_seed(0))
    return TokenWindows(ids, "random", ids.numel())


def config(**overrides):
    base = {"tokens": 16 * 40, "seq_len": 16, "micro_batch_size": 1, "grad_accumulation": 1, "learning_rate": 2e-3}
    return RecoveryConfig(**{**base, **overrides})


def pair():
    teacher = tiny_model("llama")
    student = copy.deepcopy(teacher)
    remove_blocks(student, [1])
    return teacher, student


@pytest.mark.parametrize("scope", ["blocks", "lora"])
def test_an_interrupted_run_resumes_to_the_same_weights_and_losses(tmp_path, scope):
    teacher, student = pair()
    unbroken = copy.deepcopy(student)
    reference = recover(unbroken, windows(), config(scope=scope), teacher=teacher, progress=False)
    saving = Checkpointing(tmp_path / "run", save_every=16 * 7)
    with pytest.raises(RecoveryInterrupted) as stopped:
        stopping = SignalAt(windows(), at=12)
        recover(copy.deepcopy(student), stopping, config(scope=scope), teacher=teacher, progress=False, checkpoints=saving)
    assert stopped.value.step == 12 and stopped.value.signal_name == "SIGTERM" and has_checkpoint(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-0000007", "checkpoint-0000012"]
    earlier = json.loads((tmp_path / "run" / "checkpoint-0000012" / "trainer_state.json").read_text())["seconds"]
    resumed = copy.deepcopy(student)
    result = recover(
        resumed, windows(), config(scope=scope), teacher=teacher, progress=False, checkpoints=Checkpointing(tmp_path / "run", resume=True)
    )
    assert result.resumed_from_step == 12 and result.history == reference.history
    # the time reported is the whole run's; the speed is this process's steps over this process's time
    assert 0 < earlier < result.seconds
    assert result.tokens_per_second == pytest.approx((40 - 12) * 16 / (result.seconds - earlier))
    assert all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), unbroken.state_dict().values()))
    assert not list((tmp_path / "run").glob("checkpoint-*"))  # a finished run keeps only its settings


def test_a_model_with_tied_embeddings_resumes_still_tied_and_without_a_warning(tmp_path, caplog):
    config_ = tiny_config("llama")
    config_.tie_word_embeddings = True
    torch.manual_seed(0)
    teacher = transformers.AutoModelForCausalLM.from_config(config_).eval()
    student = copy.deepcopy(teacher)
    remove_blocks(student, [1])
    unbroken = copy.deepcopy(student)
    recover(unbroken, windows(), config(), teacher=teacher, progress=False)
    with caplog.at_level(logging.WARNING), pytest.raises(RecoveryInterrupted):
        recover(
            copy.deepcopy(student),
            SignalAt(windows(), at=6),
            config(),
            teacher=teacher,
            progress=False,
            checkpoints=Checkpointing(tmp_path / "run"),
        )
    resumed = copy.deepcopy(student)
    recover(resumed, windows(), config(), teacher=teacher, progress=False, checkpoints=Checkpointing(tmp_path / "run", resume=True))
    assert resumed.lm_head.weight is resumed.model.embed_tokens.weight
    assert all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), unbroken.state_dict().values()))
    assert not [r for r in caplog.records if "shared tensor" in r.getMessage()]


def interrupted_run(tmp_path, at=5):
    teacher, student = pair()
    saving = Checkpointing(tmp_path / "run", save_every=16 * 3)
    with pytest.raises(RecoveryInterrupted):
        recover(copy.deepcopy(student), SignalAt(windows(), at=at), config(), teacher=teacher, progress=False, checkpoints=saving)
    return teacher, student


def test_a_resume_with_another_learning_rate_is_refused_naming_it(tmp_path):
    teacher, student = interrupted_run(tmp_path)
    with pytest.raises(PrunekitError, match=r"different settings \(learning_rate: 0.002 -> 0.001\)"):
        resume = Checkpointing(tmp_path / "run", resume=True)
        recover(student, windows(), config(learning_rate=1e-3), teacher=teacher, progress=False, checkpoints=resume)


def test_a_resume_with_another_model_or_data_is_refused(tmp_path):
    teacher, student = interrupted_run(tmp_path)
    resume = Checkpointing(tmp_path / "run", resume=True)
    with pytest.raises(PrunekitError, match=r"different settings \(.*model"):
        recover(copy.deepcopy(teacher), windows(), config(), teacher=teacher, progress=False, checkpoints=resume)
    with pytest.raises(PrunekitError, match=r"different settings \(data"):
        recover(student, windows(count=30), config(), teacher=teacher, progress=False, checkpoints=resume)


def test_resume_without_a_run_and_a_fresh_start_over_a_run_are_refused(tmp_path):
    teacher, student = pair()
    with pytest.raises(PrunekitError, match="nothing to resume"):
        recover(student, windows(), config(), teacher=teacher, progress=False, checkpoints=Checkpointing(tmp_path / "none", resume=True))
    interrupted_run(tmp_path)
    with pytest.raises(PrunekitError, match="already holds a recovery run; continue it with `resume`"):
        recover(student, windows(), config(), teacher=teacher, progress=False, checkpoints=Checkpointing(tmp_path / "run"))


def test_a_run_stopped_before_its_first_checkpoint_resumes_by_starting_over(tmp_path):
    teacher, student = pair()
    unbroken = copy.deepcopy(student)
    reference = recover(unbroken, windows(), config(), teacher=teacher, progress=False)
    with pytest.raises(RecoveryInterrupted):
        stopping = SignalAt(windows(), at=1)  # the signal lands before the first step: saved is the run, not a checkpoint
        recover(copy.deepcopy(student), stopping, config(), teacher=teacher, progress=False, checkpoints=Checkpointing(tmp_path / "run"))
    for checkpoint in (tmp_path / "run").glob("checkpoint-*"):  # as after a SIGKILL before the first save
        shutil.rmtree(checkpoint)
    resumed = copy.deepcopy(student)
    result = recover(
        resumed, windows(), config(), teacher=teacher, progress=False, checkpoints=Checkpointing(tmp_path / "run", resume=True)
    )
    assert result.resumed_from_step == 0 and result.history == reference.history
    assert all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), unbroken.state_dict().values()))


def test_a_full_disk_while_saving_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    teacher, student = pair()
    from accelerate import Accelerator

    real = Accelerator.save_state
    calls = []

    def fill_disk(self, output_dir, **kwargs):
        calls.append(output_dir)
        if len(calls) == 2:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "model.safetensors").write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", fill_disk)
    with pytest.raises(PrunekitError, match="No space left on device.*checkpoint-0000003 is intact"):
        saving = Checkpointing(tmp_path / "run", save_every=16 * 3)
        recover(student, windows(), config(), teacher=teacher, progress=False, checkpoints=saving)
    assert [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(("checkpoint", ".checkpoint"))] == ["checkpoint-0000003"]
    monkeypatch.setattr(Accelerator, "save_state", real)
    fresh = pair()[1]
    result = recover(fresh, windows(), config(), teacher=teacher, progress=False, checkpoints=Checkpointing(tmp_path / "run", resume=True))
    assert result.resumed_from_step == 3


@pytest.mark.parametrize("part", ["model.safetensors", "random_states_0.pkl", "optimizer.bin"])
def test_a_truncated_part_of_the_latest_checkpoint_is_refused_in_one_line(tmp_path, part):
    teacher, student = interrupted_run(tmp_path)
    latest = sorted((tmp_path / "run").glob("checkpoint-*"))[-1]
    damaged = latest / part
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    resume = Checkpointing(tmp_path / "run", resume=True)
    with pytest.raises(PrunekitError, match=rf"checkpoint {latest} cannot be read .*delete it to use the one before") as error:
        recover(student, windows(), config(), teacher=teacher, progress=False, checkpoints=resume)
    assert "\n" not in str(error.value)


def test_a_resume_names_the_field_that_differs_even_inside_the_data(tmp_path):
    teacher, student = interrupted_run(tmp_path)
    other = windows()
    other.input_ids[3, 5] += 1  # one token: the same count, length and description
    resume = Checkpointing(tmp_path / "run", resume=True)
    with pytest.raises(PrunekitError, match=r"different settings \(data\.content: '[0-9a-f]+' -> '[0-9a-f]+'\)"):
        recover(student, other, config(), teacher=teacher, progress=False, checkpoints=resume)


def test_a_resume_with_nothing_saved_says_it_starts_over(tmp_path, caplog):
    teacher, student = pair()
    recover(copy.deepcopy(student), windows(), config(), teacher=teacher, progress=False, checkpoints=Checkpointing(tmp_path / "run"))
    with caplog.at_level(logging.WARNING):
        resume = Checkpointing(tmp_path / "run", resume=True)
        recover(copy.deepcopy(student), windows(), config(), teacher=teacher, progress=False, checkpoints=resume)
    assert "holds no checkpoint to resume from (it finished earlier" in caplog.text


def test_save_every_is_checked():
    with pytest.raises(PrunekitError, match="save_every 0 must be at least 1"):
        Checkpointing("x", save_every=0)
    with pytest.raises(PrunekitError, match="save_every must be a whole number"):
        Checkpointing("x", save_every="1000")


# -- a real `prunekit recover` process, killed and resumed ----------------------------------------------


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    directory = tmp_path_factory.mktemp("shards")
    keys = sorted(topics)
    for shard in range(4):
        lines = [json.dumps({"text": topics[k]}) for k in keys[shard::4]]
        (directory / f"part-{shard}.jsonl").write_text("\n".join(lines) + "\n")
    return directory


def recover_command(model, shards, out, *extra):
    return [
        *PRUNEKIT,
        "recover",
        "--model",
        str(model),
        "--recovery-data",
        str(shards),
        "--recovery-tokens",
        "24000",
        "--recovery-seq-len",
        "48",
        "--grad-accumulation",
        "1",
        "--save-every",
        "480",
        "--heldout-windows",
        "0",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


def run_until_checkpoint(command, run_dir: Path, minimum_step: int, env=None):
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        steps = [int(p.name.split("-")[1]) for p in run_dir.glob("stage-1/checkpoint-*")]
        if steps and max(steps) >= minimum_step:
            return process
        time.sleep(0.02)
    process.kill()
    pytest.fail(f"the run ended or stalled before a checkpoint at step {minimum_step}: {process.communicate()[1][-400:]}")


def test_a_killed_recover_process_resumes_to_bitwise_the_same_model(tiny_checkpoint, shards, tmp_path):
    subprocess.run(recover_command(tiny_checkpoint, shards, tmp_path / "unbroken"), check=True, capture_output=True)
    out = tmp_path / "killed"
    process = run_until_checkpoint(recover_command(tiny_checkpoint, shards, out), Path(f"{out}.run"), 120 + os.getpid() % 200)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists()
    again = subprocess.run(recover_command(tiny_checkpoint, shards, out, "--resume"), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "unbroken" / "model.safetensors").read_bytes()
    log, reference = (json.loads((d / "prunekit_recovery.json").read_text()) for d in (out, tmp_path / "unbroken"))
    assert log["resumed_from_step"] > 0 and (log["loss_first"], log["loss_last"]) == (reference["loss_first"], reference["loss_last"])
    assert not Path(f"{out}.run").exists()  # the default run directory goes once the model is written


def test_sigterm_saves_and_exits_143_with_the_resume_command(tiny_checkpoint, shards, tmp_path):
    out = tmp_path / "stopped"
    process = run_until_checkpoint(recover_command(tiny_checkpoint, shards, out), Path(f"{out}.run"), 20)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "stopped by SIGTERM after step" in stderr and stderr.strip().endswith("--resume") and len(stderr.strip().splitlines()) == 1
    assert not out.exists() and has_checkpoint(Path(f"{out}.run") / "stage-1")
    refused = subprocess.run(recover_command(tiny_checkpoint, shards, out, "--resume", "--lr", "1e-3"), capture_output=True, text=True)
    assert refused.returncode == 2 and "learning_rate" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


def test_two_processes_resume_a_killed_run_to_bitwise_the_same_model(tiny_checkpoint, shards, tmp_path):
    """DDP on the CPU (torchrun, gloo): each process resumes its own share of the same stream."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "prunekit.cli"]
    tokens = ["--recovery-tokens", "12000"]
    unbroken_command = [*torchrun, *recover_command(tiny_checkpoint, shards, tmp_path / "unbroken")[3:], *tokens]
    unbroken = subprocess.run(unbroken_command, capture_output=True, text=True, env=CPU_ONLY)
    assert unbroken.returncode == 0, [line for line in unbroken.stderr.splitlines() if "rror" in line][:5]
    assert json.loads((tmp_path / "unbroken" / "prunekit_recovery.json").read_text())["steps"] == 12000 // (2 * 48)
    out = tmp_path / "killed"
    command = [*torchrun, *recover_command(tiny_checkpoint, shards, out)[3:], *tokens]
    process = run_until_checkpoint(command, Path(f"{out}.run"), 30, env=CPU_ONLY)
    os.killpg(process.pid, signal.SIGKILL)  # the launcher, and then its workers (in sessions of their own), as when a node dies
    subprocess.run(["pkill", "-9", "-f", f"out {out} "], check=False)
    process.wait()
    time.sleep(0.5)
    assert not out.exists()
    again = subprocess.run([*command, "--resume"], capture_output=True, text=True, env=CPU_ONLY)
    assert again.returncode == 0, [line for line in again.stderr.splitlines() if "rror" in line][:3]
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "unbroken" / "model.safetensors").read_bytes()


def test_the_default_save_interval_is_measured_on_this_processs_steps(tmp_path, monkeypatch):
    """A run resumed at step 500 that takes 6 s a step saves about every 100 steps (ten minutes), not every 50,000."""
    from types import SimpleNamespace

    from prunekit.recovery import checkpoints

    clock = [1000.0]
    monkeypatch.setattr(checkpoints.time, "perf_counter", lambda: clock[0])
    saving = checkpoints.RunCheckpoints(Checkpointing(tmp_path), SimpleNamespace(num_processes=1), {})
    for step in range(501, 506):
        clock[0] += 6.0
        assert not saving.due(step, 2048, first_step=500)  # 30 s and 20 steps before the interval is measured
    clock[0] += 6.0
    saving.due(506, 2048, first_step=500)
    assert saving.every_steps == 100
