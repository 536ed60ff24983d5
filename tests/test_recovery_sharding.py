"""Sharded recovery (FSDP2) over two CPU processes (gloo), against one process with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prunekit.errors import PrunekitError
from prunekit.recovery import RecoveryConfig, recover
from prunekit.recovery.memory import estimate_memory
from test_recovery_checkpoints import recover_command, shards  # noqa: F401  (a fixture)

from conftest import tiny_model

WORKER = str(Path(__file__).with_name("recovery_sharding_worker.py"))
ROOT = Path(__file__).parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
CPU_ONLY = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # CPU processes (gloo) on any machine, one GPU or none


def run_worker(out: Path, scope: str, sharding: str, processes: int, *extra: str) -> subprocess.CompletedProcess:
    """The tiny model's recovery: 10 steps of 2 windows each, split over `processes`."""
    launch = TORCHRUN if processes == 2 else [sys.executable]
    accumulation = str(2 // processes)
    command = [*launch, WORKER, str(out), scope, sharding, accumulation, *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=CPU_ONLY)


def finished(out: Path, process: subprocess.CompletedProcess) -> tuple[dict, dict]:
    assert process.returncode == 0, [line for line in process.stderr.splitlines() if "rror" in line][-5:]
    return json.loads((out / "result.json").read_text()), load_file(out / "student.safetensors")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference runs: one process with the whole global batch, per scope."""
    runs = {}

    def run(scope: str) -> tuple[dict, dict]:
        if scope not in runs:
            out = tmp_path_factory.mktemp(f"one-{scope}")
            runs[scope] = finished(out, run_worker(out, scope, "none", 1))
        return runs[scope]

    return run


@pytest.mark.parametrize("scope, sharding", [("blocks", "fsdp"), ("lora", "fsdp"), ("blocks", "none")])
def test_two_processes_train_as_one_process_and_sharded_ones_hold_half_the_state(tmp_path, one_process, scope, sharding):
    one, one_weights = one_process(scope)
    two, two_weights = finished(tmp_path / "two", run_worker(tmp_path / "two", scope, sharding, 2))
    assert one["steps"] == two["steps"] == 10
    for alone, together in zip(one["history"], two["history"]):
        assert abs(alone["loss"] - together["loss"]) <= 1e-4 * alone["loss"]
        assert alone["lr"] == pytest.approx(together["lr"])  # one schedule step per optimizer step, however many processes
    assert sorted(one_weights) == sorted(two_weights)
    assert all(torch.allclose(one_weights[k], two_weights[k], rtol=0, atol=1e-5) for k in one_weights)
    held = two["memory"]["measured_training_state_bytes"] / one["memory"]["measured_training_state_bytes"]
    assert held <= 0.55 if sharding == "fsdp" else held == 1.0
    assert two["memory"]["estimate"]["sharded"] == (sharding == "fsdp") and two["teacher_unchanged"]


def test_a_sharded_run_stopped_mid_way_resumes_to_the_same_weights_and_losses(tmp_path):
    unbroken, unbroken_weights = finished(tmp_path / "unbroken", run_worker(tmp_path / "unbroken", "blocks", "fsdp", 2))
    run_dir = tmp_path / "run"
    stopped = run_worker(tmp_path / "stopped", "blocks", "fsdp", 2, str(run_dir), "5")
    assert stopped.returncode != 0 and not (tmp_path / "stopped").exists()
    saved = sorted(p.name for p in run_dir.glob("checkpoint-*"))
    assert saved == ["checkpoint-0000003", "checkpoint-0000005"]
    assert sorted(p.name for p in (run_dir / saved[-1] / "sharded").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    resumed, resumed_weights = finished(tmp_path / "resumed", run_worker(tmp_path / "resumed", "blocks", "fsdp", 2, str(run_dir), "resume"))
    assert resumed["history"] == unbroken["history"]
    assert all(torch.equal(resumed_weights[k], unbroken_weights[k]) for k in unbroken_weights)


def test_accelerate_launch_with_an_fsdp_config_writes_a_plain_checkpoint(tiny_checkpoint, shards, tmp_path):  # noqa: F811
    """The shipped CPU config: `prunekit recover` sharded by accelerate's launcher, saved once by the main process."""
    from transformers import AutoModelForCausalLM

    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "examples/accelerate/fsdp-cpu.yaml")]
    command = recover_command(tiny_checkpoint, shards, tmp_path / "sharded", "--recovery-tokens", "1920")
    process = subprocess.run([*launch, "-m", "prunekit.cli", *command[3:]], capture_output=True, text=True, timeout=300, env=CPU_ONLY)
    assert process.returncode == 0, [line for line in process.stderr.splitlines() if "rror" in line][-5:]
    record = json.loads((tmp_path / "sharded" / "prunekit_recovery.json").read_text())
    assert record["config"]["sharding"] == "fsdp" and record["steps"] == 1920 // (2 * 48)
    single_command = recover_command(tiny_checkpoint, shards, tmp_path / "single", "--recovery-tokens", "1920")
    single = subprocess.run(single_command, capture_output=True, env=CPU_ONLY)
    assert single.returncode == 0
    sharded = AutoModelForCausalLM.from_pretrained(tmp_path / "sharded")
    assert set(load_file(tmp_path / "sharded" / "model.safetensors")) == set(load_file(tmp_path / "single" / "model.safetensors"))
    assert not torch.equal(sharded.model.layers[0].mlp.down_proj.weight, tiny_model("llama").model.layers[0].mlp.down_proj.weight)


def test_a_sharded_iterabre_prune_under_torchrun_writes_one_model(tiny_checkpoint, shards, tmp_path):  # noqa: F811
    """Every recovery inside `prune` shards too; the processes agree they are two (one writes, none finds its output taken)."""
    from transformers import AutoModelForCausalLM

    data = next(Path(shards).glob("*.jsonl"))
    command = [*TORCHRUN, "-m", "prunekit.cli", "prune", "--model", str(tiny_checkpoint), "--method", "iterabre", "--remove", "1"]
    command += ["--data", str(data), "--seq-len", "48", "--recovery-data", str(shards), "--recovery-tokens", "1920"]
    command += ["--recovery-seq-len", "48", "--sharding", "fsdp", "--out", str(tmp_path / "out"), "--quiet"]
    process = subprocess.run(command, capture_output=True, text=True, timeout=300, env=CPU_ONLY)
    assert process.returncode == 0, [line for line in process.stderr.splitlines() if "rror" in line][-5:]
    plan = json.loads((tmp_path / "out" / "prunekit_plan.json").read_text())
    assert '"sharding": "fsdp"' in json.dumps(plan) and '"steps": 5' in json.dumps(plan)  # 1920 tokens / (2 processes x 4 x 48)
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "out").config.num_hidden_layers == 3


def test_sharding_needs_a_multi_process_launch(monkeypatch):
    monkeypatch.delenv("MASTER_ADDR", raising=False)  # not started by a launcher, and no process group (whatever ran before)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    teacher = tiny_model("llama")
    student = tiny_model("llama")
    ids = torch.randint(3, 300, (4, 16))
    from prunekit.data.windows import TokenWindows

    config = RecoveryConfig(tokens=64, seq_len=16, grad_accumulation=1, sharding="fsdp")
    with pytest.raises(PrunekitError, match="sharded recovery needs a multi-process launch"):
        recover(student, TokenWindows(ids, "random", ids.numel()), config, teacher=teacher, progress=False)
    with pytest.raises(PrunekitError, match="sharding 'zero3' is unknown; use one of none, fsdp"):
        RecoveryConfig(sharding="zero3").check()


def test_the_memory_estimate_splits_the_state_of_a_sharded_run():
    student, teacher = tiny_model("llama"), tiny_model("llama")
    trainable = list(student.parameters())
    common = {"micro_batch": 1, "seq_len": 16, "checkpointing": False, "autocast_bf16": False, "processes": 4}
    whole = estimate_memory(student, teacher, trainable, **common)
    split = estimate_memory(student, teacher, trainable, **common, sharded=True)
    for part in ("weights", "gradients", "optimizer", "teacher"):
        assert getattr(split, part) == getattr(whole, part) // 4
    assert split.activations == whole.activations
