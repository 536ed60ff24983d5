import pytest
import torch

from prunekit.engine import SequentialRunner

from conftest import FAMILIES, tiny_model


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("batch_size", [1, 2])
def test_block_by_block_run_reproduces_the_model_forward(family, batch_size, ids):
    model = tiny_model(family)
    with torch.no_grad():
        reference = model(ids).logits
    runner = SequentialRunner(model, batch_size=batch_size, progress=False)
    inputs = runner.capture(ids)
    assert len(inputs.hidden) == -(-ids.shape[0] // batch_size)
    outputs = runner.run_blocks(inputs, range(4))
    logits = torch.cat([runner.logits(h) for h in outputs])
    torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)


def test_offloaded_run_matches_and_keeps_blocks_off_the_device(ids):
    model = tiny_model("llama")
    with torch.no_grad():
        reference = model(ids).logits
    runner = SequentialRunner(model, device="cpu", offload=True, progress=False)
    inputs = runner.capture(ids)
    seen_devices = []
    for layer in runner.adapter.layers:
        layer.register_forward_pre_hook(lambda module, args: seen_devices.append(next(module.parameters()).device.type))
    outputs = runner.run_blocks(inputs, range(4))
    torch.testing.assert_close(torch.cat([runner.logits(h) for h in outputs]), reference, rtol=1e-5, atol=1e-5)
    assert seen_devices == ["cpu"] * 4 * ids.shape[0]  # one call per block and window
    assert all(h.device.type == "cpu" for h in outputs)


def test_capture_leaves_the_model_unchanged(ids):
    model = tiny_model("gemma2")
    with torch.no_grad():
        before = model(ids).logits
    SequentialRunner(model, progress=False).capture(ids)
    assert all("forward" not in vars(layer) for layer in model.model.layers)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_offload_to_cuda_matches_cpu(ids):
    model = tiny_model("llama")
    with torch.no_grad():
        reference = model(ids).logits
    runner = SequentialRunner(model, device="cuda", offload=True, progress=False)
    outputs = runner.run_blocks(runner.capture(ids), range(4))
    logits = torch.cat([runner.logits(h).cpu() for h in outputs])
    torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-4)
    assert next(model.model.layers[0].parameters()).device.type == "cpu"
