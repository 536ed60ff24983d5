"""Decode speed of FlexiGPT's shared blocks against the dense model, unfused and fused (issue 15).

python benchmarks/flexigpt_decode.py
"""

import torch

import prunekit
from prunekit import FlexiGPTConfig
from prunekit.evaluation.speed import measure_speed
from prunekit.models.shared_blocks import fuse_for_inference

torch.manual_seed(0)
loaded = prunekit.load_model("smollm2-135m", device="cpu", dtype="float32", progress=False)
calib = prunekit.load_windows(
    "../shared/data/c4/c4-train.00000-of-01024.first1000.jsonl", loaded.tokenizer, purpose="calibration", num_windows=4, seq_len=512
)


def dec(m):
    return measure_speed(m, prompt_tokens=128, new_tokens=64, repeats=3).decode_tokens_per_second


flexi = prunekit.prune(loaded.model, FlexiGPTConfig(remove=9, recovery=None), calib, progress=False).model
rows = []
for rep in range(2):
    d = dec(loaded.model)
    u = dec(flexi)
    fuse_for_inference(flexi)
    f = dec(flexi)
    fuse_for_inference(flexi, False)
    rows.append((d, u, f))
    print(f"dense {d:.1f}  shared {u:.1f} ({u / d:.2f}x)  fused {f:.1f} ({f / d:.2f}x)", flush=True)
