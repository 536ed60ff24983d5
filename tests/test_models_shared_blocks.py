import torch
from torch import nn

from prunekit.models.shared_blocks import OutputNorm, SharedLoRALinear

from conftest import tiny_model


def test_svd_initialisation_reproduces_the_rank_r_difference():
    torch.manual_seed(0)
    base, target = nn.Linear(12, 9, bias=True).double(), nn.Linear(12, 9, bias=True).double()
    shared = SharedLoRALinear(base, rank=3)
    shared.init_from_difference(target)
    u, s, vh = torch.linalg.svd(target.weight - base.weight, full_matrices=False)
    expected = base.weight + u[:, :3] @ torch.diag(s[:3]) @ vh[:3]
    torch.testing.assert_close(shared.weight, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(shared.effective_bias(), target.bias, rtol=0, atol=1e-12)
    x = torch.randn(5, 12, dtype=torch.float64)
    torch.testing.assert_close(shared(x), x @ expected.t() + target.bias, rtol=0, atol=1e-12)


def test_full_rank_lora_equals_the_target_and_the_base_is_borrowed():
    torch.manual_seed(1)
    base, target = nn.Linear(8, 6, bias=False), nn.Linear(8, 6, bias=False)
    shared = SharedLoRALinear(base, rank=6)
    shared.init_from_difference(target)
    x = torch.randn(4, 8)
    torch.testing.assert_close(shared(x), target(x), rtol=0, atol=1e-5)
    assert shared.base.weight.data_ptr() == base.weight.data_ptr()
    assert {name for name, _ in shared.named_parameters()} == {"lora_A", "lora_B"}  # the base is its owner's


def test_output_norm_scales_unit_rms_outputs():
    norm = OutputNorm(16, init_scale=0.5)
    out = norm(torch.randn(3, 16) * 7)
    torch.testing.assert_close(out.pow(2).mean(-1), torch.full((3,), 0.25), rtol=1e-4, atol=1e-4)


def test_fused_inference_gives_the_same_logits_and_follows_later_training(ids):
    from prunekit.methods.flexigpt import replace_blocks
    from prunekit.models.shared_blocks import fuse_for_inference, shared_linears

    model = tiny_model("llama")
    replace_blocks(model, [1, 2], rank=4, progress=False)
    with torch.no_grad():
        plain = model(ids).logits
        assert fuse_for_inference(model) == 14
        torch.testing.assert_close(model(ids).logits, plain, rtol=1e-5, atol=1e-5)
        linear = shared_linears(model.model.layers[1])[0]
        linear.lora_B.add_(0.1)  # a weight changes after fusing (as training would): the fused weight follows
        changed = model(ids).logits
    fuse_for_inference(model, False)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, changed, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(changed, plain)
