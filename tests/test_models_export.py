import json

import pytest
import torch
import transformers
from conftest import FAMILIES, tiny_model

from prunekit.errors import PrunekitError
from prunekit.models import export
from prunekit.models.export import save_model
from prunekit.models.surgery import remove_blocks


@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_checkpoint_reloads_with_plain_transformers(family, tmp_path, tiny_tokenizer, ids):
    model = tiny_model(family)
    remove_blocks(model, [1, 2])
    out = save_model(model, tiny_tokenizer, tmp_path / "pruned", extra_json={"note.json": {"a": 1}})
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert reloaded.config.num_hidden_layers == 2
    assert getattr(reloaded.config, "layer_types", None) == getattr(model.config, "layer_types", None)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    prompt = ids[:1, :5]
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(reloaded.generate(prompt, use_cache=True, **kwargs), model.generate(prompt, use_cache=False, **kwargs))
    assert json.loads((out / "note.json").read_text()) == {"a": 1}
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert transformers.AutoTokenizer.from_pretrained(out)("def f(): pass").input_ids


def test_non_empty_output_is_refused_without_overwrite(tmp_path, tiny_tokenizer):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(PrunekitError, match="not empty"):
        save_model(tiny_model("llama"), tiny_tokenizer, out)
    assert (out / "keep.txt").read_text() == "mine"
    save_model(tiny_model("llama"), tiny_tokenizer, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()


def test_failed_write_leaves_existing_output_untouched(tmp_path, tiny_tokenizer, monkeypatch):
    out = tmp_path / "out"
    save_model(tiny_model("llama"), tiny_tokenizer, out)
    before = sorted(p.name for p in out.iterdir())

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "write_checkpoint", broken)
    with pytest.raises(RuntimeError):
        save_model(tiny_model("llama"), tiny_tokenizer, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary directory left behind


def test_output_may_not_overwrite_the_input_model(tmp_path, tiny_tokenizer):
    source = tmp_path / "model"
    save_model(tiny_model("llama"), tiny_tokenizer, source)
    for target in (source, tmp_path):
        with pytest.raises(PrunekitError, match="input model"):
            save_model(tiny_model("llama"), tiny_tokenizer, target, overwrite=True, protected=[source])
    assert (source / "config.json").is_file()
