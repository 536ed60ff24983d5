"""What only a GPU machine can check: LIAR's statistics and solves on the device, and the recovery
trainer's placement and micro-batch regrouping. Skipped without CUDA (the CPU suite covers the
decisions themselves: see test_recovery.py and test_methods_liar.py)."""

import copy

import pytest
import torch

from prunekit.data.windows import TokenWindows
from prunekit.methods.liar.decoder import prune_width
from prunekit.models.adapters import ModelAdapter
from prunekit.models.surgery import remove_blocks
from prunekit.recovery import RecoveryConfig, recover

from conftest import VOCAB, tiny_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def windows(count=16, seq_len=24):
    ids = torch.randint(3, VOCAB, (count, seq_len), generator=torch.Generator().manual_seed(0))
    return TokenWindows(ids, "random", ids.numel())


def test_liar_on_the_gpu_matches_the_cpu_in_float32():
    cpu_model = tiny_model("llama")
    gpu_model = copy.deepcopy(cpu_model).cuda()
    cpu_plan = prune_width(cpu_model, windows(), ffn_ratio=0.25, head_ratio=0.5, progress=False)
    gpu_plan = prune_width(gpu_model, windows(), ffn_ratio=0.25, head_ratio=0.5, device="cuda", progress=False)
    assert [layer["kept_channels"] for layer in cpu_plan["layers"]] == [layer["kept_channels"] for layer in gpu_plan["layers"]]
    assert gpu_plan["ffn_outputs"] == "recomputed" and gpu_plan["peak_cuda_mib"] > 0
    cpu_state, gpu_state = cpu_model.state_dict(), gpu_model.state_dict()
    assert all(torch.allclose(cpu_state[k], gpu_state[k].cpu(), rtol=1e-3, atol=1e-5) for k in cpu_state)


@pytest.mark.parametrize("offload", [False, True])
def test_liar_in_bfloat16_on_the_gpu_and_with_offload(offload):
    model = tiny_model("qwen3").to(torch.bfloat16)
    if not offload:
        model = model.cuda()
    plan = prune_width(model, windows(), ratio=0.3, device="cuda", offload=offload, progress=False)
    assert plan["ffn_outputs"] == "recomputed" and plan["ffn_channels_removed"] > 0
    assert all(torch.isfinite(p.float()).all() for p in model.parameters())
    assert {p.device.type for p in ModelAdapter(model).layers.parameters()} == {"cpu" if offload else "cuda"}


def _pair():
    teacher = tiny_model("llama")
    student = copy.deepcopy(teacher)
    remove_blocks(student, [1])
    return teacher, student


def test_models_on_the_cpu_train_on_the_cpu_of_a_gpu_machine():
    teacher, student = _pair()
    config = RecoveryConfig(tokens=16 * 24, seq_len=24, micro_batch_size=1, grad_accumulation=4, learning_rate=1e-3)
    result = recover(student, windows(), config, teacher=teacher, progress=False)
    assert result.device == "cpu" and next(student.parameters()).device.type == "cpu"


def test_asked_for_the_gpu_both_models_move_and_micro_batches_are_regrouped():
    teacher, student = _pair()
    config = RecoveryConfig(tokens=16 * 24, seq_len=24, micro_batch_size=1, grad_accumulation=4, learning_rate=1e-3)
    result = recover(student, windows(), config, teacher=teacher, device="cuda", progress=False)
    assert result.device.startswith("cuda") and next(student.parameters()).is_cuda and next(teacher.parameters()).is_cuda
    assert (result.micro_batch_size, result.grad_accumulation) == (4, 1) and not result.gradient_checkpointing
    assert result.peak_memory_mib > 0 and all(torch.isfinite(p.float()).all() for p in student.parameters())
    fixed = recover(
        student, windows(), RecoveryConfig(**{**config.to_dict(), "fit_micro_batch": False}), teacher=teacher, device="cuda", progress=False
    )
    assert (fixed.micro_batch_size, fixed.grad_accumulation) == (1, 4)
