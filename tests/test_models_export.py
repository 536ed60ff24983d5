import json

import pytest
import torch
import transformers

from prunekit.errors import PrunekitError
from prunekit.models import export
from prunekit.models.export import save_model
from prunekit.models.surgery import remove_blocks

from conftest import FAMILIES, tiny_model


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
        with pytest.raises(PrunekitError, match="(is|holds) the input"):
            save_model(tiny_model("llama"), tiny_tokenizer, target, overwrite=True, protected=[source])
    assert (source / "config.json").is_file()


def test_outputs_get_the_permissions_a_plain_save_gives(tmp_path, tiny_tokenizer):
    import os
    import stat

    old = os.umask(0o022)
    try:
        out = save_model(tiny_model("llama"), tiny_tokenizer, tmp_path / "pruned", extra_json={"prunekit_plan.json": {"a": 1}})
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}


def test_a_claimed_output_cannot_be_claimed_twice_and_a_filled_one_is_never_replaced(tmp_path):
    import fcntl
    import os

    out = (tmp_path / "out").resolve()
    lock = export._lock_path(out)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another process holds it (flock locks per open file, so this counts as another)
    try:
        with pytest.raises(PrunekitError, match="another prunekit run is writing"):
            export.check_output_dir(out, overwrite=False)
    finally:
        os.close(fd)
    with export.output_dir(out) as tmp:
        (tmp / "a.txt").write_text("first")
        (out).mkdir()
        (out / "b.txt").write_text("written meanwhile")
        with pytest.raises(PrunekitError, match="written by another run meanwhile"):
            with export.atomic_output_dir(out, replace=False) as second:
                (second / "c.txt").write_text("second")
        os.remove(out / "b.txt")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"] and not lock.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary directory or lock left


def test_temporary_directories_of_killed_runs_are_removed_and_a_lost_output_is_restored(tmp_path):
    out = tmp_path / "out"
    dead = 2**22 + 12345  # above the default pid_max: no such process
    (tmp_path / f".out.tmp-{dead}-abc").mkdir()
    (tmp_path / f".out.old-{dead}-def").mkdir()
    (tmp_path / f".out.old-{dead}-def" / "model.safetensors").write_text("previous result")
    (tmp_path / ".out.tmp-1-live").mkdir()  # pid 1 is alive: another run's, left alone
    with export.atomic_output_dir(out) as tmp:
        assert (out / "model.safetensors").read_text() == "previous result"  # put back before this run replaces it
        (tmp / "model.safetensors").write_text("new")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".out.tmp-1-live", "out"] and (out / "model.safetensors").read_text() == "new"


def test_outputs_that_cannot_be_written_are_refused_before_any_work(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(PrunekitError, match="which is a file"):
        export.check_output_dir(tmp_path / "file" / "sub" / "out", overwrite=False)
    monkeypatch.setattr(export.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 2**20})())
    with pytest.raises(PrunekitError, match="needs about 1.0 GiB"):
        export.check_output_dir(tmp_path / "out", overwrite=False, needed_bytes=2**30)

    def no_write(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(export.tempfile, "mkdtemp", no_write)
    with pytest.raises(PrunekitError, match="cannot write in .*Permission denied"):
        export.check_output_dir(tmp_path / "other", overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
