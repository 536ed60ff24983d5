"""GGUF export checked in llama.cpp itself (llama-cpp-python): every structure prunekit writes for the
Llama, Mistral, Qwen, Gemma-3 and Phi-3 families either runs there with transformers' logits and greedy
tokens, or is refused in one line with nothing written."""

from __future__ import annotations

import errno
import json

import gguf
import numpy as np
import pytest
import torch
import transformers

import prunekit
from prunekit.cli import main
from prunekit.data.windows import TokenWindows
from prunekit.errors import PrunekitError
from prunekit.export import export_gguf
from prunekit.models.adapters import ModelAdapter
from prunekit.models.width_surgery import slice_attention, slice_mlp

from conftest import VOCAB, tiny_bert, tiny_model

llama_cpp = pytest.importorskip("llama_cpp")

# f32 file, f32 KV cache: llama.cpp and transformers differ only by summation order.
F32_LOGIT_TOLERANCE = 1e-4
# llama.cpp's GELU on the CPU reads a float16 table (input and output rounded to float16): Gemma-3's logits
# move by up to 1e-3 on these models for that alone (4e-4 left when transformers' GELU is given the same table).
GELU_TABLE_TOLERANCE = 2e-3
PROMPT = list(range(3, 43))
GREEDY_TOKENS = 12


def windows(count=8, seq_len=32, seed=0):
    ids = torch.randint(3, VOCAB, (count, seq_len), generator=torch.Generator().manual_seed(seed))
    return TokenWindows(ids, "random", ids.numel())


class LlamaCpp:
    """An exported file in llama.cpp, with every position's logits kept."""

    def __init__(self, path):
        self.llm = llama_cpp.Llama(str(path), logits_all=True, n_ctx=128, n_threads=2, verbose=False, type_k=0, type_v=0)

    def logits(self, ids: list[int]) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(ids)
        return np.array(self.llm.scores[: len(ids)])

    def greedy(self, ids: list[int], count: int) -> list[int]:
        """Greedy decoding through llama.cpp's own KV cache, one token at a time."""
        self.llm.reset()
        self.llm.eval(ids)
        out = []
        for _ in range(count):
            out.append(int(np.argmax(self.llm.scores[self.llm.n_tokens - 1])))
            self.llm.eval(out[-1:])
        return out

    def close(self):
        self.llm.close()


def empty_sublayers(model):
    """Layer 1 keeps no FFN channel and layer 2 no head, each with a compensation bias (the extreme of adaptive widths)."""
    adapter = ModelAdapter(model)
    hidden = model.config.hidden_size
    bias = torch.linspace(-0.2, 0.2, hidden)
    empty = torch.arange(0)
    slice_mlp(adapter.layers[1].mlp, adapter.family, empty, torch.zeros(hidden, 0), bias, True)
    slice_attention(adapter.layers[2].self_attn, adapter.family, empty, empty, torch.zeros(hidden, 0), -bias, True)
    return model


def pruned(family, structure):
    model = tiny_model(family)
    if family == "mistral":
        model.config.sliding_window = None  # llama.cpp's llama attends over the whole context
    if structure == "dense":
        return model
    if structure == "depth":
        return prunekit.prune(model, "shortgpt", windows(), remove=1, progress=False).model
    if structure == "uniform width":
        return prunekit.prune(model, "liar", windows(), ffn_ratio=0.3, head_ratio=0.5, progress=False).model
    if structure == "uniform ffn":
        return prunekit.prune(model, "liar", windows(), ffn_ratio=0.3, progress=False).model
    if structure == "uniform ffn, no bias":
        return prunekit.prune(model, "liar", windows(), ffn_ratio=0.3, reconstruction="none", progress=False).model
    if structure == "adaptive width":
        return prunekit.prune(model, "liar", windows(), ratio=0.3, allocation="adaptive", progress=False).model
    if structure == "depth + width recipe":
        recipe = [{"method": "shortgpt", "remove": 1}, {"method": "liar", "ratio": 0.3, "allocation": "adaptive"}]
        return prunekit.prune(model, recipe, windows(), progress=False).model
    if structure == "empty sublayers":
        return empty_sublayers(prunekit.prune(model, "liar", windows(), ratio=0.2, allocation="adaptive", progress=False).model)
    raise AssertionError(structure)


CASES = [
    ("llama", "dense", "llama"),
    ("llama", "depth", "llama"),
    ("llama", "uniform width", "llama"),
    ("llama", "adaptive width", "deci"),
    ("llama", "depth + width recipe", "deci"),
    ("llama", "empty sublayers", "deci"),
    ("mistral", "adaptive width", "deci"),
    ("qwen2", "dense", "qwen2"),
    ("qwen2", "uniform width", "deci"),  # fewer heads than the hidden width: llama.cpp's qwen2 cannot size them
    ("qwen2", "adaptive width", "deci"),
    ("qwen3", "dense", "qwen3"),
    ("qwen3", "uniform ffn, no bias", "qwen3"),
    ("gemma3_text", "dense", "gemma3"),
    ("gemma3_text", "depth", "gemma3"),  # its sliding and global layers no longer alternate as llama.cpp assumes
    ("gemma3_text", "uniform ffn", "gemma3"),
    ("phi3", "dense", "phi3"),
    ("phi3", "depth", "phi3"),
    ("phi3", "uniform ffn", "phi3"),
]


@pytest.mark.parametrize("family, structure, architecture", CASES, ids=[f"{f}-{s}" for f, s, _ in CASES])
def test_llama_cpp_computes_the_logits_and_greedy_tokens_of_transformers(family, structure, architecture, tiny_tokenizer, tmp_path):
    model = pruned(family, structure)
    exported = export_gguf(model, tiny_tokenizer, tmp_path / "model.gguf", gguf_type="f32")
    assert exported.architecture == architecture and exported.path.stat().st_size == exported.bytes
    runner = LlamaCpp(exported.path)
    try:
        ours = runner.logits(PROMPT)
        with torch.no_grad():
            reference = model(torch.tensor([PROMPT])).logits[0].numpy()
            expected = model.generate(torch.tensor([PROMPT]), max_new_tokens=GREEDY_TOKENS, do_sample=False, pad_token_id=0)
        assert np.abs(ours - reference).max() < (GELU_TABLE_TOLERANCE if architecture == "gemma3" else F32_LOGIT_TOLERANCE)
        assert runner.greedy(PROMPT, GREEDY_TOKENS) == expected[0, len(PROMPT) :].tolist()
    finally:
        runner.close()


def test_per_layer_widths_are_written_as_deci_arrays_and_empty_sublayers_carry_their_bias(tiny_tokenizer, tmp_path):
    model = pruned("llama", "empty sublayers")
    path = export_gguf(model, tiny_tokenizer, tmp_path / "m.gguf", gguf_type="f32").path
    reader = gguf.GGUFReader(path)
    ffn = reader.fields["deci.feed_forward_length"].contents()
    heads = reader.fields["deci.attention.head_count"].contents()
    widths = [ModelAdapter(model).layers[i].mlp.down_proj.in_features for i in range(4)]
    assert ffn[0] == widths[0] and ffn[1] == 1 and heads[2] == 2  # one zeroed channel / head group holds each bias
    names = {t.name for t in reader.tensors}
    assert {"blk.1.ffn_down.bias", "blk.2.attn_output.bias", "blk.0.ffn_down.bias"} <= names


def test_gemma3_flags_each_layers_sliding_window_and_writes_norms_as_llama_cpp_scales_them(tiny_tokenizer, tmp_path):
    model = pruned("gemma3_text", "depth")
    reader = gguf.GGUFReader(export_gguf(model, tiny_tokenizer, tmp_path / "m.gguf", gguf_type="f32").path)
    pattern = [bool(flag) for flag in reader.fields["gemma3.attention.sliding_window_pattern"].contents()]
    assert pattern == [kind == "sliding_attention" for kind in model.config.layer_types] and len(pattern) == 3
    assert reader.fields["gemma3.rope.freq_base_swa"].contents() == 10000.0
    assert reader.fields["gemma3.attention.sliding_window"].contents() == 8
    norm = next(t for t in reader.tensors if t.name == "output_norm.weight")
    assert np.allclose(norm.data, model.model.norm.weight.detach().numpy() + 1.0)


@pytest.mark.parametrize(
    "family, change",
    [("gemma3_text", {"query_pre_attn_scalar": 24}), ("phi3", {"partial_rotary_factor": 0.5})],
    ids=["gemma3 attention scale", "phi3 partial rotary"],
)
def test_settings_llama_cpp_reads_differently_still_give_transformers_logits(family, change, tiny_tokenizer, tmp_path):
    """Gemma-3's attention scale (llama.cpp derives it from the layer count) is folded into the query norm;
    Phi-4-mini-style partial rotary becomes the rope dimension count."""
    from conftest import random_model, tiny_config

    config = tiny_config(family)
    for key, value in change.items():
        setattr(config, key, value)
        if key == "partial_rotary_factor":
            config.rope_parameters["partial_rotary_factor"] = value
    model = random_model(config)
    runner = LlamaCpp(export_gguf(model, tiny_tokenizer, tmp_path / "m.gguf", gguf_type="f32").path)
    try:
        with torch.no_grad():
            reference = model(torch.tensor([PROMPT])).logits[0].numpy()
        assert np.abs(runner.logits(PROMPT) - reference).max() < GELU_TABLE_TOLERANCE
    finally:
        runner.close()


def test_a_name_that_says_phi3_cannot_break_llama_cpps_vocabulary_loader(tiny_tokenizer):
    """llama.cpp looks up Phi-3's special tokens in any model whose name says Phi-3."""
    from prunekit.export.gguf_writer import loadable_name

    assert loadable_name("Phi-3-mini-pruned", tiny_tokenizer) == "Phi- 3-mini-pruned"
    assert loadable_name("llama-pruned", tiny_tokenizer) == "llama-pruned"


def sentencepiece_style_tokenizer():
    """A byte-fallback BPE in SentencePiece's form (Gemma's, Llama 2's): '▁' for spaces and byte pieces;
    llama.cpp reads no merges for it. Trained on Python's own docs."""
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer, decoders, models, normalizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    pieces = ["<pad>", "<s>", "</s>", "<unk>", *(f"<0x{i:02X}>" for i in range(256))]
    tokenizer.train_from_iterator(
        list(topics.values())[:20], trainers.BpeTrainer(vocab_size=VOCAB - 8, special_tokens=pieces, show_progress=False)
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def test_a_sentencepiece_style_tokenizer_splits_text_in_llama_cpp_as_in_transformers(tmp_path):
    """Its pieces get scores in merge order, which llama.cpp's SentencePiece tokenizer merges by."""
    from pydoc_data.topics import topics

    tokenizer = sentencepiece_style_tokenizer()
    model = tiny_model("llama")
    model.resize_token_embeddings(len(tokenizer))  # its 256 byte pieces take more rows than the tiny models have
    path = export_gguf(model, tokenizer, tmp_path / "m.gguf", gguf_type="f32").path
    reader = gguf.GGUFReader(path)
    assert reader.fields["tokenizer.ggml.model"].contents() == "llama" and reader.fields["tokenizer.ggml.add_space_prefix"].contents()
    vocabulary = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    try:
        for text in list(topics.values())[20:50]:  # text it was not trained on
            text = text[:400]
            assert vocabulary.tokenize(text.encode(), add_bos=False) == tokenizer.encode(text, add_special_tokens=False)
    finally:
        vocabulary.close()


def test_a_llama3_rope_scaling_becomes_llama_cpps_rope_freqs(tiny_tokenizer, tmp_path):
    model = tiny_model("llama")
    rope = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
    model.config.rope_parameters = {**rope, "original_max_position_embeddings": 16}
    model = type(model)(model.config).eval()  # rebuilt so the rotary embedding reads the scaling
    model.load_state_dict(tiny_model("llama").state_dict())
    path = export_gguf(model, tiny_tokenizer, tmp_path / "m.gguf", gguf_type="f32").path
    assert "rope_freqs.weight" in {t.name for t in gguf.GGUFReader(path).tensors}
    runner = LlamaCpp(path)
    with torch.no_grad():
        reference = model(torch.tensor([PROMPT])).logits[0].numpy()
    assert np.abs(runner.logits(PROMPT) - reference).max() < F32_LOGIT_TOLERANCE
    runner.close()


def test_smaller_types_are_smaller_and_stay_close(tiny_tokenizer, tmp_path):
    model = pruned("llama", "adaptive width")
    with torch.no_grad():
        reference = model(torch.tensor([PROMPT])).logits[0].numpy()
    sizes, errors = {}, {}
    for kind in ("f32", "f16", "bf16", "q8_0", "q4_k_m"):
        exported = export_gguf(model, tiny_tokenizer, tmp_path / f"{kind}.gguf", gguf_type=kind)
        runner = LlamaCpp(exported.path)
        sizes[kind], errors[kind] = exported.bytes, float(np.abs(runner.logits(PROMPT) - reference).max())
        runner.close()
        if kind == "q8_0":  # adaptive widths are not multiples of 32: those down projections fall back to f16
            assert any("f16" in note for note in exported.notes)
    assert sizes["f32"] > sizes["f16"] == sizes["bf16"] > sizes["q8_0"] > sizes["q4_k_m"]
    assert errors["f16"] < 0.02 and errors["bf16"] < 0.1 and errors["q8_0"] < 0.1 and errors["q4_k_m"] < 1.0


def test_flexigpt_blocks_are_materialised_and_output_norms_refused(tiny_tokenizer, tmp_path):
    materialised = prunekit.prune(tiny_model("llama"), "flexigpt", windows(), remove=1, output_norm=None, recovery=0, progress=False).model
    exported = export_gguf(materialised, tiny_tokenizer, tmp_path / "shared.gguf", gguf_type="f32")
    assert any("separate weights" in note for note in exported.notes)
    runner = LlamaCpp(exported.path)
    with torch.no_grad():
        reference = materialised(torch.tensor([PROMPT])).logits[0].numpy()
    assert np.abs(runner.logits(PROMPT) - reference).max() < F32_LOGIT_TOLERANCE
    runner.close()
    normalised = prunekit.prune(tiny_model("llama"), "flexigpt", windows(), remove=1, recovery=0, progress=False).model
    with pytest.raises(PrunekitError, match="normalise their attention and MLP outputs"):
        export_gguf(normalised, tiny_tokenizer, tmp_path / "norm.gguf")
    assert not (tmp_path / "norm.gguf").exists()


@pytest.mark.parametrize(
    "family, structure, message",
    [
        ("qwen3", "adaptive width", "per-layer widths have no llama.cpp form"),
        ("qwen3", "uniform width", "qwen3 has no attention-output or FFN-down bias"),
        ("gemma2", "dense", "gemma2 is not supported yet"),
        ("gemma3_text", "adaptive width", "per-layer widths have no llama.cpp form"),
        ("gemma3_text", "uniform width", "gemma3 adds no bias to its projections"),
        ("phi3", "uniform width", "phi3 sizes attention by the hidden width"),
    ],
)
def test_structures_llama_cpp_cannot_run_are_refused_in_one_line(family, structure, message, tiny_tokenizer, tmp_path):
    with pytest.raises(PrunekitError, match=message) as refused:
        export_gguf(pruned(family, structure), tiny_tokenizer, tmp_path / "m.gguf")
    assert "\n" not in str(refused.value) and not list(tmp_path.iterdir())


def test_a_full_disk_leaves_nothing_and_an_existing_output_is_kept(tiny_tokenizer, tmp_path, monkeypatch):
    model = tiny_model("llama")
    (tmp_path / "old.gguf").write_text("earlier")
    with pytest.raises(PrunekitError, match="old.gguf exists; pass `overwrite`"):
        export_gguf(model, tiny_tokenizer, tmp_path / "old.gguf")

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", full)
    with pytest.raises(PrunekitError, match="No space left on device.*nothing was written"):
        export_gguf(model, tiny_tokenizer, tmp_path / "old.gguf", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.gguf"] and (tmp_path / "old.gguf").read_text() == "earlier"


@pytest.fixture
def checkpoint(tmp_path, tiny_tokenizer):
    path = tmp_path / "pruned"
    prunekit.save(prunekit.prune(tiny_model("llama"), "liar", windows(), ratio=0.3, allocation="adaptive", progress=False), path)
    tiny_tokenizer.save_pretrained(path)
    return path


def test_the_export_command_writes_a_file_and_refuses_bad_input_with_exit_2(checkpoint, tmp_path, capsys):
    out = tmp_path / "pruned.gguf"
    assert main(["export", "--model", str(checkpoint), "--out", str(out), "--type", "q8_0", "--json", "--quiet"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written["architecture"] == "deci" and written["type"] == "q8_0" and out.stat().st_size == written["bytes"]
    before = out.read_bytes()
    bad = [
        (["--out", str(out)], "exists; pass --overwrite"),
        (["--out", str(tmp_path / "x.gguf"), "--type", "q3_z"], "unknown GGUF type 'q3_z'"),
        (["--out", str(tmp_path)], "is a directory"),
    ]
    for extra, message in bad:
        assert main(["export", "--model", str(checkpoint), *extra]) == 2
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1
    assert out.read_bytes() == before and not (tmp_path / "x.gguf").exists()
    encoder = tmp_path / "bert"
    tiny_bert().save_pretrained(encoder)
    assert main(["export", "--model", str(encoder), "--out", str(tmp_path / "b.gguf")]) == 2
    assert "encoder" in capsys.readouterr().err and not (tmp_path / "b.gguf").exists()


def test_prune_writes_the_gguf_beside_the_checkpoint(tiny_checkpoint, tmp_path, capsys):
    out, gguf_path = tmp_path / "out", tmp_path / "out.gguf"
    args = ["prune", "--model", str(tiny_checkpoint), "--method", "shortgpt", "--remove", "1", "--windows", "2", "--seq-len", "16"]
    assert main([*args, "--out", str(out), "--gguf", str(gguf_path), "--gguf-type", "f32", "--quiet"]) == 0
    assert "GGUF (llama, f32" in capsys.readouterr().out
    assert gguf.GGUFReader(gguf_path).fields["llama.block_count"].contents() == 3 and (out / "config.json").is_file()
    assert main([*args, "--out", str(tmp_path / "o2"), "--gguf", str(gguf_path)]) == 2  # checked before any work
    assert "exists" in capsys.readouterr().err and not (tmp_path / "o2").exists()


def test_a_bfloat16_model_exports_with_its_weights_widened_per_tensor(tiny_tokenizer, tmp_path):
    rounded = tiny_model("llama")
    with torch.no_grad():
        for param in rounded.parameters():
            param.copy_(param.to(torch.bfloat16).float())  # the bf16 model's weights, computed in f32
        reference = rounded(torch.tensor([PROMPT])).logits[0].numpy()
    model = tiny_model("llama").to(torch.bfloat16)
    path = export_gguf(model, tiny_tokenizer, tmp_path / "m.gguf", gguf_type="f32").path
    runner = LlamaCpp(path)
    assert np.abs(runner.logits(PROMPT) - reference).max() < F32_LOGIT_TOLERANCE
    runner.close()


def test_a_second_export_into_the_same_file_stops_at_once(tiny_tokenizer, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "m.gguf"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from pathlib import Path; import time; from prunekit.models.export import claim_output; "
            f"claim_output(Path({str(out)!r})); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(PrunekitError, match="another prunekit run is writing"):
            export_gguf(tiny_model("llama"), tiny_tokenizer, out)
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    assert export_gguf(tiny_model("llama"), tiny_tokenizer, out).path == out  # once the other run is gone
