"""The tokenizer of a GGUF file, read from the model's tokenizer files by llama.cpp's own vocabulary code.

`gguf.vocab` (llama.cpp's reader) supplies the tokens, merges, special token ids and chat template.
Two things its readers leave to llama.cpp's converter are done as that converter does them: added
tokens marked special become control tokens (others user-defined), and the pre-tokenizer (how text is
split before BPE) is named by hashing the tokenization of llama.cpp's probe text. A SentencePiece-style
tokenizer.json (Gemma, Llama 2) carries no piece scores, which llama.cpp's tokenizer merges by: its
pieces are stored in merge order, so each ordinary piece scores minus its id, which keeps that order.
"""

from __future__ import annotations

import json
from hashlib import sha256
from pathlib import Path

import gguf

from prunekit.errors import PrunekitError

# llama.cpp's probe text for naming a BPE pre-tokenizer (convert_hf_to_gguf.py, get_vocab_base_pre).
PROBE_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 3 33 333 3333 "
    "33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български "
    "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? "
    "We'Ve a'lL"
)
# The probe's hash -> llama.cpp's pre-tokenizer name, for the tokenizers of the families prunekit exports
# (from llama.cpp's converter; a tokenizer not listed here gets llama.cpp's default splitting, with a note).
PRE_TOKENIZERS = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Meta-Llama-3-8B
    "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d": "smaug-bpe",  # Smaug-Llama-3-70B
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM / SmolLM2
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5 / Qwen2 / Qwen2.5
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen3
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",  # Mistral Nemo
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",  # GPT-2
}


def probe_hash(tokenizer) -> str:
    return sha256(str(tokenizer.encode(PROBE_TEXT)).encode()).hexdigest()


def prepends_space(location: Path) -> bool:
    """Whether a SentencePiece-style tokenizer.json puts '▁' before the text (llama.cpp's add_space_prefix)."""
    tokenizer = json.loads((location / "tokenizer.json").read_text(encoding="utf-8"))

    def steps(part):
        part = part or {}
        return part.get("normalizers") or part.get("pretokenizers") or [part]

    for step in [*steps(tokenizer.get("normalizer")), *steps(tokenizer.get("pre_tokenizer"))]:
        if step.get("type") == "Prepend" and step.get("prepend") == "\u2581":
            return True
        if step.get("type") == "Metaspace" and step.get("prepend_scheme", "always") != "never" and step.get("add_prefix_space", True):
            return True
    return False


def _reader(location: Path):
    """llama.cpp's reader for this tokenizer: byte-level BPE (GPT-2 style) or SentencePiece-style."""
    try:
        return gguf.vocab.BpeVocab(location)
    except FileNotFoundError:
        pass
    try:
        return gguf.vocab.LlamaHfVocab(location)
    except (FileNotFoundError, TypeError, ValueError) as error:
        raise PrunekitError(
            f"cannot read a tokenizer llama.cpp understands in {location} ({str(error).splitlines()[0][:120]}); "
            "GGUF export needs a tokenizer.json"
        ) from error


def add_vocabulary(writer: gguf.GGUFWriter, location: str | Path, tokenizer, rows: int) -> list[str]:
    """Write the tokenizer keys; `rows` is the embedding's row count (extra rows get unused pad tokens).
    Returns notes for the user."""
    location = Path(location)
    if not (location / "tokenizer.json").is_file() and not (location / "vocab.json").is_file():
        raise PrunekitError(f"{location} has no tokenizer.json; GGUF export writes the tokenizer too, so save it with the model")
    vocab = _reader(location)
    tokens, scores, types = [], [], []
    for text, score, kind in vocab.all_tokens():
        tokens.append(text)
        scores.append(score)
        types.append(kind)
    if len(tokens) > rows:
        raise PrunekitError(f"the tokenizer has {len(tokens)} tokens but the model only {rows} embeddings; the checkpoint is inconsistent")
    special = {index: token.special for index, token in getattr(tokenizer, "added_tokens_decoder", {}).items()}
    for index, is_special in special.items():
        if index < len(types):
            types[index] = gguf.TokenType.CONTROL if is_special else gguf.TokenType.USER_DEFINED
    if vocab.tokenizer_model == "llama":
        scores = [-float(index) if kind == gguf.TokenType.NORMAL else score for index, (score, kind) in enumerate(zip(scores, types))]
    for index in range(len(tokens), rows):
        tokens.append(f"[PAD{index}]")
        scores.append(-1000.0)
        types.append(gguf.TokenType.UNUSED)
    notes = []
    writer.add_tokenizer_model(vocab.tokenizer_model)
    if vocab.tokenizer_model == "gpt2":
        pre = PRE_TOKENIZERS.get(probe_hash(tokenizer))
        if pre is None:
            notes.append(
                "llama.cpp does not know this tokenizer's pre-tokenizer: it splits text its default way, "
                "so a few texts may tokenize differently"
            )
            pre = "default"
        writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    if vocab.tokenizer_model != "gpt2":
        writer.add_token_scores(scores)
        writer.add_add_space_prefix(prepends_space(location))
    writer.add_token_types(types)
    special_vocab = gguf.SpecialVocab(location, load_merges=vocab.tokenizer_model == "gpt2", n_vocab=rows)
    special_vocab.add_to_gguf(writer, quiet=True)
    return notes
