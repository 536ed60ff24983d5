"""The memory a recovery run needs is estimated before it trains; a run that cannot fit stops with what would."""

from __future__ import annotations

import pytest
import torch

from prunekit.data.windows import TokenWindows
from prunekit.errors import PrunekitError
from prunekit.recovery import RecoveryConfig, memory, recover
from prunekit.recovery.memory import estimate_memory

from conftest import VOCAB, tiny_model


def windows(count=8, seq_len=16):
    ids = torch.randint(3, VOCAB, (count, seq_len), generator=torch.Generator().manual_seed(0))
    return TokenWindows(ids, "random", ids.numel())


def test_the_estimate_counts_weights_gradients_adam_moments_teacher_and_activations():
    student, teacher = tiny_model("llama"), tiny_model("llama", seed=1)
    trainable = list(student.model.layers[1].parameters())
    count = sum(p.numel() for p in trainable)
    every = sum(p.numel() for p in student.parameters())
    plain = estimate_memory(student, teacher, trainable, micro_batch=2, seq_len=16, checkpointing=False, autocast_bf16=False)
    assert (plain.weights, plain.gradients, plain.optimizer, plain.teacher) == (4 * every, 4 * count, 8 * count, 4 * every)
    checkpointed = estimate_memory(student, teacher, trainable, micro_batch=2, seq_len=16, checkpointing=True, autocast_bf16=False)
    assert checkpointed.activations < plain.activations
    sharded = estimate_memory(
        student, teacher, trainable, micro_batch=2, seq_len=16, checkpointing=False, autocast_bf16=False, processes=2, sharded=True
    )
    assert sharded.weights == plain.weights // 2 and sharded.optimizer == plain.optimizer // 2
    assert plain.to_dict()["total"] == plain.total


def test_a_run_that_cannot_fit_stops_before_training_and_names_what_would(monkeypatch):
    student, teacher = tiny_model("llama"), tiny_model("llama", seed=1)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    needed = estimate_memory(
        student, teacher, list(student.parameters()), micro_batch=1, seq_len=16, checkpointing=False, autocast_bf16=False
    ).total
    monkeypatch.setattr(memory, "device_capacity", lambda device: needed * 2 // 3)
    config = RecoveryConfig(tokens=64, seq_len=16, grad_accumulation=1, scope="full")
    with pytest.raises(
        PrunekitError, match=r"recovery needs about [0-9.]+ MiB \(weights .*\) per process, more than this machine's memory holds"
    ) as error:
        recover(student, windows(), config, teacher=teacher, progress=False)
    assert "`scope` lora" in str(error.value) and "`sharding` fsdp over" in str(error.value) and "\n" not in str(error.value)
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    monkeypatch.setenv(memory.SKIP_VARIABLE, "1")
    recover(student, windows(), config, teacher=teacher, progress=False)


def test_the_result_records_the_estimate_and_the_measured_peak():
    student, teacher = tiny_model("llama"), tiny_model("llama", seed=1)
    result = recover(student, windows(), RecoveryConfig(tokens=64, seq_len=16, grad_accumulation=1), teacher=teacher, progress=False)
    record = result.memory
    assert record["estimate"]["total"] > record["estimate"]["weights"] > 0
    assert record["measured_kind"] == "process_peak_rss" and record["measured_peak_bytes"] > record["estimate"]["weights"]
