"""A structure's costs against the model prunekit builds for it: parameters exact, GGUF bytes as the file has them."""

import pytest
import torch

import prunekit
from prunekit.data.windows import TokenWindows
from prunekit.export.gguf_writer import export_gguf
from prunekit.fitting.costs import DROPPED, GgufTypes, LatencyModel, LayerChoice, Structure, dense_structure, structure_params
from prunekit.fitting.library import ModelShape
from prunekit.fitting.search import _recipe
from prunekit.methods.liar.config import LiarConfig

from conftest import tiny_model

STRUCTURES = {
    "dense": None,
    "dropped": [LayerChoice(2, 128), DROPPED, LayerChoice(2, 128), LayerChoice(2, 128)],
    "narrowed": [LayerChoice(1, 96), LayerChoice(2, 64), LayerChoice(2, 128), LayerChoice(1, 128)],
    "both": [DROPPED, LayerChoice(1, 32), LayerChoice(2, 96), DROPPED],
}


def windows():
    torch.manual_seed(0)
    ids = torch.randint(3, 200, (8, 32))
    return TokenWindows(ids, "random", ids.numel())


# families whose llama.cpp form reads one width for all layers: uniform structures only, heads kept
UNIFORM_STRUCTURES = {
    "dropped": [LayerChoice(2, 128), DROPPED, LayerChoice(2, 128), LayerChoice(2, 128)],
    "narrowed": [LayerChoice(2, 64)] * 4,
    "both": [DROPPED, LayerChoice(2, 96), LayerChoice(2, 96), DROPPED],
}


def build(structure: Structure, family: str = "llama"):
    model = tiny_model(family)
    shape = ModelShape.of(model)
    recipe = _recipe(structure, shape, LiarConfig(ratio=0.5))
    return prunekit.prune(model, recipe, data=windows(), progress=False).model if recipe else model


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_parameters_are_exact(name):
    shape = ModelShape.of(tiny_model("llama"))
    structure = Structure(STRUCTURES[name]) if STRUCTURES[name] else dense_structure(shape)
    assert structure_params(shape, structure) == prunekit.parameter_count(build(structure))


@pytest.mark.parametrize(
    "family, gguf_type", [("llama", "q8_0"), ("llama", "q4_0"), ("gemma3_text", "q8_0"), ("phi3", "q4_0"), ("qwen3", "q8_0")]
)
def test_gguf_bytes_as_written(tmp_path, tiny_tokenizer, family, gguf_type):
    pytest.importorskip("llama_cpp")
    dense = tiny_model(family)
    shape = ModelShape.of(dense)
    dense_path = export_gguf(dense, tiny_tokenizer, tmp_path / "dense.gguf", gguf_type=gguf_type, name="dense").path
    types = GgufTypes.read(dense_path, gguf_type, shape.num_layers)
    assert types.structure_bytes(shape, dense_structure(shape), name="dense") == dense_path.stat().st_size
    for name, layers in (STRUCTURES if family == "llama" else UNIFORM_STRUCTURES).items():
        if layers is None:
            continue
        structure = Structure(layers)
        path = export_gguf(build(structure, family), tiny_tokenizer, tmp_path / f"{name}.gguf", gguf_type=gguf_type, name=name).path
        assert types.structure_bytes(shape, structure, name=name) == path.stat().st_size, name


def test_latency_model_recovers_its_probes():
    model = LatencyModel.fit(100.0, 160.0, (0.5, 0.5), 125.0, (0.6, 1.0))
    assert model.relative_time(0.5, 0.5) == pytest.approx(100 / 160)
    assert model.relative_time(0.6, 1.0) == pytest.approx(100 / 125)
    assert model.relative_time(1.0, 1.0) == pytest.approx(1.0)
