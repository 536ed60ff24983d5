"""prunekit's cache under hostile settings: it deletes only what it wrote, counts only what it removed, and refuses
a PRUNEKIT_CACHE that is empty, a file, someone else's folder or unwritable, before any slow conversion."""

from __future__ import annotations

import json
import os

import pytest

from prunekit.cli import main
from prunekit.errors import PrunekitError
from prunekit.models import cache, loading
from prunekit.models.cache import ENTRY_MARKER, ROOT_MARKER, cache_root, mark_entry, writable_cache_dir

from conftest import tiny_model


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def user_files(root):
    """A user's own project and notes, laid out as the kinds folders of a cache would be."""
    (root / "projA" / "src").mkdir(parents=True)
    (root / "projA" / "src" / "main.py").write_text("print('mine')\n")
    (root / "notes").mkdir()
    (root / "notes" / "todo.md").write_text("keep me\n")
    (root / "gguf" / "my-model").mkdir(parents=True)
    (root / "gguf" / "my-model" / "weights.bin").write_bytes(b"x" * 1000)
    return listing(root)


def listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_an_empty_prunekit_cache_is_refused_and_the_working_directory_is_left_alone(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = user_files(tmp_path)
    monkeypatch.setenv("PRUNEKIT_CACHE", "")
    for argv in (["cache", "--clear"], ["cache"]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and "PRUNEKIT_CACHE is set but empty" in err and err.count("\n") == 1
    assert listing(tmp_path) == before


def test_a_folder_of_the_users_own_files_is_not_cleared(tmp_path, capsys, monkeypatch):
    mine = tmp_path / "mymodels"
    mine.mkdir()
    before = user_files(mine)
    monkeypatch.setenv("PRUNEKIT_CACHE", str(mine))
    code, _, err = run(capsys, "cache", "--clear")
    assert code == 2 and "is not a prunekit cache" in err and err.count("\n") == 1
    assert listing(mine) == before
    with pytest.raises(PrunekitError, match="holds files that prunekit did not write"):
        writable_cache_dir("gguf")  # nor is it written into


def test_clear_removes_only_marked_entries_and_names_what_it_kept(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    folder = writable_cache_dir("gguf")
    ours = folder / "m-0123456789abcdef"
    ours.mkdir()
    (ours / "model.safetensors").write_bytes(b"x" * 2**20)
    mark_entry(ours, "m.gguf")
    unfinished = folder / "half-written"  # no marker: a conversion killed midway, or something else
    unfinished.mkdir()
    (unfinished / "model.safetensors").write_bytes(b"y" * 10)
    code, out, _ = run(capsys, "cache", "--clear", "--json")
    payload = json.loads(out)
    assert code == 0 and payload["removed"] == [str(ours)] and payload["kept"] == [str(unfinished)]
    assert payload["freed_bytes"] == 2**20 + len(json.dumps({"source": "m.gguf"})) + 1
    assert not ours.exists() and (unfinished / "model.safetensors").read_bytes() == b"y" * 10
    assert (tmp_path / "cache" / ROOT_MARKER).is_file()


@pytest.mark.skipif(os.geteuid() == 0, reason="root deletes read-only entries anyway")
def test_an_entry_that_cannot_be_deleted_is_named_not_counted(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    folder = writable_cache_dir("gguf")
    stuck = folder / "stuck"
    stuck.mkdir()
    (stuck / "model.safetensors").write_bytes(b"x" * 3 * 2**20)
    mark_entry(stuck, "s.gguf")
    stuck.chmod(0o555)
    try:
        code, out, err = run(capsys, "cache", "--clear")
    finally:
        stuck.chmod(0o755)
    assert code == 1 and "could not remove" in err and str(stuck) in err and "removed 0 MiB (0 entries)" in out
    assert (stuck / "model.safetensors").is_file()


def test_an_entry_that_cannot_be_deleted_is_named_not_counted_whoever_runs_it(tmp_path, capsys, monkeypatch):
    """The same as above where the test runs as root (which ignores permissions): the deletion is made to fail."""
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    stuck = writable_cache_dir("gguf") / "stuck"
    stuck.mkdir()
    (stuck / "model.safetensors").write_bytes(b"x" * 3 * 2**20)
    mark_entry(stuck, "s.gguf")
    monkeypatch.setattr(cache, "_remove_tree", lambda path: [f"{path}/model.safetensors: Operation not permitted"])
    code, out, err = run(capsys, "cache", "--clear")
    assert code == 1 and f"could not remove {stuck}" in err and "Operation not permitted" in err and err.count("\n") == 1
    assert "removed 0 MiB (0 entries)" in out and (stuck / "model.safetensors").is_file()


def test_a_file_or_unwritable_cache_is_refused_before_converting(tmp_path, monkeypatch, tiny_tokenizer):
    from prunekit.export.gguf_writer import export_gguf

    gguf_file = tmp_path / "tiny.gguf"
    export_gguf(tiny_model("llama"), tiny_tokenizer, gguf_file, gguf_type="f32")
    (tmp_path / "afile").write_text("not a folder")
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "afile"))
    with pytest.raises(PrunekitError, match="is a file, not a directory"):
        loading.load_model(str(gguf_file), device="cpu", progress=False)
    converted = []
    monkeypatch.setattr(loading, "bias_switches", lambda *a: converted.append(a) or {})
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    monkeypatch.setenv("PRUNEKIT_CACHE", str(readonly))
    monkeypatch.setattr(cache.tempfile, "mkdtemp", lambda **kw: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
    with pytest.raises(PrunekitError, match="cannot write prunekit's cache .* set PRUNEKIT_CACHE to a writable directory"):
        loading.load_model(str(gguf_file), device="cpu", progress=False)
    assert not converted  # refused before transformers read the file


def test_a_damaged_cached_conversion_is_converted_again(tmp_path, monkeypatch, tiny_tokenizer):
    from prunekit.export.gguf_writer import export_gguf

    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    gguf_file = tmp_path / "tiny.gguf"
    export_gguf(tiny_model("llama"), tiny_tokenizer, gguf_file, gguf_type="f32")
    first = loading.load_model(str(gguf_file), device="cpu", progress=False)
    entry = loading._gguf_cache_dir(gguf_file)
    assert (entry / ENTRY_MARKER).is_file()
    weights = entry / "model.safetensors"
    kept = weights.read_bytes()
    weights.unlink()  # a new file: the loaded model still maps the old one
    weights.write_bytes(kept[: len(kept) // 2])  # a disk that filled up, a copy cut short
    again = loading.load_model(str(gguf_file), device="cpu", progress=False)
    assert all(a.equal(b) for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()))
    assert cache_root() == tmp_path / "cache"


def test_a_cache_written_before_the_markers_is_adopted_and_its_unmarked_entries_kept(tmp_path, capsys, monkeypatch):
    root = tmp_path / "old-cache"
    old_entry = root / "gguf" / "m-0123456789abcdef"
    old_entry.mkdir(parents=True)
    (old_entry / "model.safetensors").write_bytes(b"x" * 100)
    monkeypatch.setenv("PRUNEKIT_CACHE", str(root))
    assert writable_cache_dir("gguf") == root / "gguf" and (root / ROOT_MARKER).is_file()
    code, out, _ = run(capsys, "cache", "--clear")
    assert code == 0 and f"kept {old_entry}" in out and (old_entry / "model.safetensors").is_file()
