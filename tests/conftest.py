"""Tiny randomly initialised models of every supported family, a tiny tokenizer, and the benchmark
scripts as modules."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
import transformers

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
transformers.utils.logging.set_verbosity_error()

VOCAB = 320
FAMILY_CONFIGS = {
    "llama": (transformers.LlamaConfig, {}),
    "mistral": (transformers.MistralConfig, {"sliding_window": 8}),
    "qwen2": (transformers.Qwen2Config, {}),
    "qwen3": (transformers.Qwen3Config, {"head_dim": 16}),
    "gemma": (transformers.GemmaConfig, {"head_dim": 16}),
    "gemma2": (transformers.Gemma2Config, {"head_dim": 16, "sliding_window": 8}),
    "gemma3_text": (
        transformers.Gemma3TextConfig,
        {
            "head_dim": 16,
            "sliding_window": 8,
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        },
    ),
    "phi3": (transformers.Phi3Config, {}),
}
FAMILIES = list(FAMILY_CONFIGS)
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """benchmarks/<name>.py as a module (with benchmarks/ on the path while it loads, for `_common`)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def tiny_config(family: str, num_layers: int = 4):
    config_class, extra = FAMILY_CONFIGS[family]
    return config_class(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
        **extra,
    )


def tiny_model(family: str = "llama", num_layers: int = 4, seed: int = 0):
    """A randomly initialised causal LM; weights scaled up so blocks change their input visibly."""
    return random_model(tiny_config(family, num_layers), seed)


def random_model(config, seed: int = 0, std: float = 0.08):
    """A causal LM of `config` with its matrices (embeddings aside) drawn at `std`, in eval mode."""
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 2 and "embed" not in name:
                param.normal_(0.0, std)
    return model.eval()


class SignalAt:
    """Windows that send this process SIGTERM when step `at` draws its data (as a scheduler would); `delay`
    seconds of sleep per draw stand in for slow steps."""

    def __init__(self, windows, at, seed=0, delay=0.0):
        from prunekit.recovery.window_stream import WindowOrder

        self.inner, self.at, self.calls, self.delay = WindowOrder(windows, seed), at, 0, delay
        self.description, self.seq_len, self.num_windows = self.inner.description, self.inner.seq_len, self.inner.num_windows

    def take(self, count):
        self.calls += 1
        time.sleep(self.delay)
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return self.inner.take(count)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def zero_block(model, index: int) -> None:
    """Make block `index` an identity map: its attention and MLP outputs become zero."""
    from prunekit.models.adapters import ModelAdapter

    adapter = ModelAdapter(model)
    layer = adapter.layers[index]
    with torch.no_grad():
        getattr(layer, adapter.family.attention_attr).o_proj.weight.zero_()
        getattr(layer, adapter.family.mlp_attr).down_proj.weight.zero_()


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE trained on Python's own docs: real text in, ids < VOCAB out."""
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB - 8,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(topics.values())[:20], trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_tokenizer):
    """A saved tiny Llama checkpoint with tokenizer: what a user would pass as --model DIR."""
    path = tmp_path_factory.mktemp("tiny-llama")
    model = tiny_model("llama")
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def ids():
    torch.manual_seed(1)
    return torch.randint(3, VOCAB, (3, 24))


BERT_VOCAB = 300


def tiny_bert(seed: int = 0):
    """A randomly initialised 3-block BERT encoder (4 heads of 16, 128 FFN channels)."""
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=BERT_VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=128,
    )
    return transformers.BertModel(config).eval()


@pytest.fixture(scope="session")
def bert_tokenizer(tmp_path_factory):
    """A WordPiece tokenizer over made-up words w0..w294 (real text maps mostly to [UNK])."""
    folder = tmp_path_factory.mktemp("vocab")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(BERT_VOCAB - 5)]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    return transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
