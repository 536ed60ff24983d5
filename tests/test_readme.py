"""The Python examples of the README and of docs/python-api.md run as written, on a tiny 30-block model
instead of SmolLM2.

Only what a tiny CPU test cannot afford is changed: `load_model` returns the tiny model, windows are
4 x 32 tokens, and recovery budgets shrink to 2,048 tokens. The YAML recipe must equal the Python one.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import prunekit
from prunekit.methods.recipe import recipe_configs
from prunekit.models.loading import load_model

from conftest import tiny_model

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
API_PAGE = ROOT / "docs" / "python-api.md"


def _blocks(language: str, page: Path = API_PAGE) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", page.read_text(), flags=re.S)


@pytest.fixture
def tiny_setup(tmp_path, tiny_tokenizer, monkeypatch):
    source = tmp_path / "tiny-30"
    model = tiny_model("llama", num_layers=30)
    model.config.max_position_embeddings = 1024
    model.save_pretrained(source)
    tiny_tokenizer.save_pretrained(source)
    real_windows = prunekit.load_windows
    monkeypatch.setattr(prunekit, "load_model", lambda spec, **kw: load_model(str(source), device="cpu", progress=False))
    monkeypatch.setattr(
        prunekit, "load_windows", lambda spec, tok, **kw: real_windows(spec, tok, **{**kw, "num_windows": 4, "seq_len": 32})
    )
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)


def _shrunk(code: str) -> str:
    for big in ("tokens=200_000", "tokens=50_000"):
        code = code.replace(big, "tokens=2_048")
    return code.replace('"tokens": 50_000', '"tokens": 2_048')


def test_the_python_examples_run_as_written(tiny_setup, monkeypatch):
    from prunekit.scoring import blocks as block_scores
    from prunekit.scoring import channels

    monkeypatch.setattr(
        block_scores.BLOCK_METRICS, "entries", dict(block_scores.BLOCK_METRICS.entries)
    )  # the example's registrations end with it
    monkeypatch.setattr(channels.CHANNEL_CRITERIA, "entries", dict(channels.CHANNEL_CRITERIA.entries))
    blocks = _blocks("python")
    assert len(blocks) == 3 and "prunekit.prune(" in blocks[0]
    namespace: dict = {}
    for code in blocks:
        exec(compile(_shrunk(code), "README.md", "exec"), namespace)  # noqa: S102 - the README's own examples
    again, result = namespace["again"], namespace["result"]
    assert namespace["shallower"].plan.removed_blocks == [28, 29]  # the example metric's least important blocks
    assert namespace["narrower"].plan.stages[0]["details"]["criterion"] == "consumer-norm"
    assert [s["method"] for s in result.plan.stages] == ["shortgpt", "liar", "recover"]
    assert again.plan.removed_blocks == result.plan.removed_blocks and Path("out/smol-36/prunekit_shared_blocks.json").is_file()
    reloaded = prunekit.load_model("out/smol-recipe")  # the tiny model again: the patched loader ignores the spec
    assert reloaded is not None and Path("out/smol-recipe/prunekit_plan.json").is_file()


def test_the_readmes_python_example_runs_as_written(tiny_setup):
    (code,) = _blocks("python", README)
    namespace: dict = {}
    exec(compile(_shrunk(code), "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    assert [s["method"] for s in namespace["result"].plan.stages] == ["shortgpt", "liar", "recover"]
    assert Path("out/smol-recipe/config.json").is_file() and Path("out/smol-recipe.gguf").stat().st_size > 0


def test_the_yaml_recipe_is_the_python_recipe(tmp_path):
    (yaml_text,) = _blocks("yaml")
    (tmp_path / "recipe.yaml").write_text(yaml_text)
    namespace: dict = {}
    python = _blocks("python")[1]
    exec(
        compile("from prunekit import LiarConfig, RecoveryConfig, ShortGPTConfig\n" + python.splitlines()[0], "README.md", "exec"),
        namespace,
    )
    assert recipe_configs(tmp_path / "recipe.yaml") == namespace["recipe"]
