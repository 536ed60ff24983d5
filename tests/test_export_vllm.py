"""The DeciLM checkpoints prunekit writes, served by vLLM itself (its CPU build, in the environment `make vllm`
makes): prompt log-probabilities within 1e-4 of prunekit's own forward at fp32, and the same greedy tokens.

vLLM pins its own torch and transformers, so it runs in a second virtual environment (VLLM_PYTHON, default
.venv-vllm/bin/python) through benchmarks/vllm_measure.py; without that environment these tests skip and say so.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import transformers

import prunekit
from prunekit.export.decilm import export_decilm
from prunekit.models.adapters import ModelAdapter
from prunekit.models.width_surgery import slice_attention, slice_mlp
from test_export_decilm import narrow_heads
from test_export_gguf import empty_sublayers

from conftest import VOCAB, random_model

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = Path(os.environ.get("VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))
BUILT = VLLM_PYTHON.parent.parent / ".vllm-installed"  # make vllm's stamp: a half-installed environment does not count
RESULT = "prunekit-vllm-result "  # benchmarks/vllm_measure.py's prefix of its result line
TOLERANCE = 1e-4  # fp32 on both sides; the differences are summation order
pytestmark = pytest.mark.skipif(not BUILT.is_file(), reason=f"vLLM's environment is not built ({BUILT} missing; run make vllm)")


def vllm_sized_model(seed: int = 0):
    """A tiny Llama with a head size vLLM's CPU attention takes (64)."""
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    return random_model(config, seed, std=0.05)


def windows():
    ids = torch.randint(3, VOCAB, (8, 64), generator=torch.Generator().manual_seed(0))
    return prunekit.TokenWindows(ids, "random", ids.numel())


def removed_sublayers(model):
    """Layer 0 loses its FFN and layer 3 its attention, neither with a bias left: both become no_op in the format."""
    adapter = ModelAdapter(model)
    hidden, empty = model.config.hidden_size, torch.arange(0)
    slice_mlp(adapter.layers[0].mlp, adapter.family, empty, torch.zeros(hidden, 0), None, False)
    slice_attention(adapter.layers[3].self_attn, adapter.family, empty, empty, torch.zeros(hidden, 0), None, False)
    with torch.no_grad():
        for linear in (adapter.layers[0].mlp.down_proj, adapter.layers[3].self_attn.o_proj):
            if linear.bias is not None:
                linear.bias.zero_()  # nothing left to carry
    return model


def structure(name):
    model = vllm_sized_model()
    if name == "dense":
        return model
    if name == "depth + adaptive width recipe":
        recipe = [{"method": "shortgpt", "remove": 1}, {"method": "liar", "ratio": 0.3, "allocation": "adaptive"}]
        return prunekit.prune(model, recipe, windows(), progress=False).model
    if name == "sublayers emptied or removed":  # widths with compensation biases and no_op sublayers
        width = prunekit.prune(model, "liar", windows(), ratio=0.2, allocation="adaptive", progress=False).model
        return narrow_heads(removed_sublayers(empty_sublayers(width)), 0, [1])  # layer 0: one group, padded to four heads
    raise AssertionError(name)


def served(directory: Path, prompts: list[list[int]], tmp_path: Path) -> dict:
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    done = subprocess.run(
        [str(VLLM_PYTHON), str(ROOT / "benchmarks" / "vllm_measure.py"), str(directory), str(tmp_path / "prompts.json")],
        capture_output=True,
        text=True,
        timeout=900,
        env={**{k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}, "CUDA_VISIBLE_DEVICES": ""},  # vLLM divides by its bar's time
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith(RESULT))
    return json.loads(line[len(RESULT) :])


@pytest.mark.parametrize("name", ["dense", "depth + adaptive width recipe", "sublayers emptied or removed"])
def test_vllm_serves_the_exported_model_with_its_log_probabilities_and_greedy_tokens(name, tiny_tokenizer, tmp_path):
    model = structure(name)
    export_decilm(model, tiny_tokenizer, tmp_path / "model")
    prompts = torch.randint(3, VOCAB, (2, 24), generator=torch.Generator().manual_seed(1)).tolist()
    result = served(tmp_path / "model", prompts, tmp_path)
    with torch.no_grad():
        for prompt, theirs, greedy in zip(prompts, result["logprobs"], result["greedy"]):
            ids = torch.tensor([prompt])
            ours = torch.log_softmax(model(ids).logits[0].double(), -1)
            expected = [ours[i - 1, token].item() for i, token in enumerate(prompt) if i > 0]
            assert max(abs(a - b) for a, b in zip(theirs[1:], expected)) < TOLERANCE
            generated = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)[0, len(prompt) :].tolist()
            assert greedy == generated
