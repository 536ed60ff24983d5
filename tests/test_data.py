import json

import pytest
import torch

from prunekit.data.sources import builtin_text, load_text, wikitext_rows_to_text
from prunekit.data.windows import calibration_windows, evaluation_windows, load_windows
from prunekit.errors import PrunekitError


def test_builtin_halves_are_real_and_disjoint():
    calibration, evaluation = builtin_text("calibration"), builtin_text("evaluation")
    assert len(calibration) > 100_000 and len(evaluation) > 100_000
    assert calibration[:2000] not in evaluation


def test_wikitext_raw_rows_join_like_gptq():
    raw = " \n = Title = \n \n Some text .\n"
    assert wikitext_rows_to_text(raw) == "\n\n = Title = \n" + "\n\n" + "\n\n" + " Some text .\n"


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("a.txt", "plain text", "plain text"),
        ("a.jsonl", '{"text": "one"}\n{"text": "two"}\n', "one\n\ntwo"),
        ("a.json", json.dumps(["one", "two"]), "one\n\ntwo"),
        ("b.json", json.dumps({"text": ["one", "two"]}), "one\n\ntwo"),
        ("c.json", json.dumps([{"text": "one"}, {"text": "two"}]), "one\n\ntwo"),
    ],
)
def test_local_file_formats(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_text(content)
    assert load_text(str(path)).text == expected


@pytest.mark.parametrize("spec, message", [("missing.txt", "not found"), ("nonsense-name", "unknown data")])
def test_bad_specs_give_one_line_errors(tmp_path, spec, message):
    with pytest.raises(PrunekitError, match=message) as error:
        load_text(str(tmp_path / spec) if spec.endswith(".txt") else spec)
    assert "\n" not in str(error.value)


def test_invalid_json_is_reported(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(PrunekitError, match="not valid JSON"):
        load_text(str(path))


def test_calibration_windows_are_seeded_and_reproducible():
    ids = torch.arange(1000)
    a, b, c = (calibration_windows(ids, 4, 32, seed=s) for s in (0, 0, 1))
    assert a.input_ids.shape == (4, 32)
    assert torch.equal(a.input_ids, b.input_ids) and not torch.equal(a.input_ids, c.input_ids)
    for row in a.input_ids:  # each window is a contiguous slice of the text
        assert torch.equal(row, torch.arange(row[0], row[0] + 32))


def test_evaluation_windows_are_consecutive_and_non_overlapping():
    windows = evaluation_windows(torch.arange(100), 30)
    assert windows.input_ids.shape == (3, 30)
    assert torch.equal(windows.input_ids.flatten(), torch.arange(90))
    assert evaluation_windows(torch.arange(100), 30, max_windows=2).num_windows == 2


def test_too_little_data_is_refused(tmp_path, tiny_tokenizer):
    path = tmp_path / "short.txt"
    path.write_text("just a few words")
    with pytest.raises(PrunekitError, match="fewer than one window of 512"):
        load_windows(str(path), tiny_tokenizer, purpose="calibration", num_windows=4, seq_len=512)
    path.write_text("   ")
    with pytest.raises(PrunekitError, match="empty"):
        load_windows(str(path), tiny_tokenizer, purpose="evaluation", num_windows=None, seq_len=8)


def test_builtin_windows_tokenize(tiny_tokenizer):
    windows = load_windows("builtin", tiny_tokenizer, purpose="calibration", num_windows=3, seq_len=64)
    assert windows.input_ids.shape == (3, 64) and windows.summary()["tokens"] == 192


def test_records_without_the_text_field_are_refused_not_guessed(tmp_path):
    data = tmp_path / "docs.jsonl"
    data.write_text("\n".join(json.dumps({"id": f"doc-{i}", "body": f"sentence number {i}."}) for i in range(3)))
    with pytest.raises(
        PrunekitError,
        match=r"docs.jsonl:1: no 'text' string in this record \(its fields: id, body\); name the text field with `text_field`",
    ):
        load_text(str(data))
    assert load_text(str(data), text_field="body").text == "sentence number 0.\n\nsentence number 1.\n\nsentence number 2."


def test_a_directory_as_data_says_it_is_a_directory(tmp_path):
    with pytest.raises(PrunekitError, match="is a directory; pass one .txt"):
        load_text(str(tmp_path))
