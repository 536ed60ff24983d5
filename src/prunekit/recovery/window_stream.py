"""Where a recovery run draws its windows from, one optimizer step at a time, with a position to resume.

Two kinds: `WindowOrder` over windows held in memory (small data, self-generated text), drawn in a
seeded random order pass after pass; and `PackedWindowStream`, which reads documents as it goes,
tokenizes them, joins them with EOS, packs them into `seq_len` windows and shuffles them through a
seeded buffer, so memory does not grow with the corpus or the budget. A weighted mix of sources is
interleaved exactly (smooth weighted round-robin over windows), so each source's share of tokens
equals its weight to within one window. Both are deterministic for a given data, seed and budget,
and `state_dict()` / `load_state_dict()` continue a stream exactly where it stopped.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from prunekit.data.documents import SHARD_SUFFIXES, HubDocuments, Position, ShardDocuments
from prunekit.data.sources import HUB_ALIASES, HUB_DATASETS, LOCAL_SUFFIXES
from prunekit.data.windows import TokenWindows
from prunekit.errors import ParameterError, PrunekitError
from prunekit.fingerprints import token_digest

log = logging.getLogger(__name__)

SHUFFLE_BUFFER_WINDOWS = 1024  # 1024 windows of 512 tokens: 2 MiB of int32, enough to mix neighbouring documents
DOCUMENTS_PER_TOKENIZER_CALL = 64  # a fast tokenizer encodes a batch at once
IN_MEMORY_LIMIT_BYTES = 64 * 2**20  # one plain local file below this is read whole (as before; fastest for small data)


class WindowOrder:
    """Windows held in memory, in a seeded random order that is drawn afresh for every pass."""

    def __init__(self, windows: TokenWindows, seed: int = 0):
        if windows.num_windows < 1:
            raise PrunekitError(f"recovery data {windows.description} has no windows")
        self.windows, self.seed, self.position = windows, seed, 0
        self.description, self.seq_len = windows.description, windows.seq_len
        self._orders: list[torch.Tensor] = []
        self._generator = torch.Generator().manual_seed(seed)

    @property
    def num_windows(self) -> int | None:
        return self.windows.num_windows

    def _order(self, epoch: int) -> torch.Tensor:
        while len(self._orders) <= epoch:  # one generator drawn pass after pass: the same orders as a concatenation
            self._orders.append(torch.randperm(self.windows.num_windows, generator=self._generator))
        return self._orders[epoch]

    def take(self, count: int) -> torch.Tensor:
        n = self.windows.num_windows
        rows = [int(self._order(i // n)[i % n]) for i in range(self.position, self.position + count)]
        self.position += count
        return self.windows.input_ids[rows]

    def passes(self) -> float | None:
        """How often the data was read: the tokens trained on over those the data holds (the windows may be a
        budget's share of a larger text); None below one pass, as for a stream."""
        available, windowed = self.windows.total_tokens_available, self.windows.num_tokens
        whole = available - windowed < self.seq_len  # the windows are all of the data (less a partial window)
        read = self.position * self.seq_len / (windowed if whole else available)
        return read if read >= 1 - 1e-9 else None

    def identity(self) -> dict:
        return {
            "data": self.description,
            "windows": self.windows.num_windows,
            "seq_len": self.seq_len,
            "seed": self.seed,
            "content": token_digest(self.windows.input_ids),  # a file that changed under the same name is other data
        }

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])


class _PackedSource:
    """One source's documents tokenized and cut into windows; the tokens not yet in a window are carried."""

    def __init__(self, documents, tokenizer, seq_len: int):
        self.documents, self.tokenizer, self.seq_len = documents, tokenizer, seq_len
        self.eos = tokenizer.eos_token_id
        self.position, self.carry, self.windows_out, self.pass_windows = Position(), [], 0, None
        self.pass_tokens = 0  # tokens read in the current pass: a pass without any means the data holds no text
        self._pieces = None

    def _refill(self) -> None:
        if self._pieces is None:
            self._pieces = self.documents.pieces(self.position)
        texts, ends, last, pass_ended = [], [], self.position, False
        while len(texts) < DOCUMENTS_PER_TOKENIZER_CALL:
            piece = next(self._pieces)
            if piece.after.epoch > last.epoch and piece.after.file == 0 and piece.after.record == 0 and not piece.text:
                last, pass_ended = piece.after, True
                break
            texts.append(piece.text)
            ends.append(piece.ends_document)
            last = piece.after
        if texts:
            encoded = self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
            for ids, ends_document in zip(encoded, ends):
                self.pass_tokens += len(ids) + (ends_document and self.eos is not None)
                self.carry.extend(ids)
                if ends_document and self.eos is not None:
                    self.carry.append(self.eos)
        if pass_ended:
            if self.pass_tokens == 0:
                raise PrunekitError(f"recovery data {self.documents.description} holds no text")
            if self.pass_windows is None:
                self.pass_windows = self.pass_tokens / self.seq_len
                log.warning("recovery data %s ends before the budget does: reading it again", self.documents.description)
            self.pass_tokens = 0
        self.position = last

    def next_window(self) -> torch.Tensor:
        while len(self.carry) < self.seq_len:
            self._refill()
        window = torch.tensor(self.carry[: self.seq_len], dtype=torch.int32)
        del self.carry[: self.seq_len]
        self.windows_out += 1
        return window

    def state_dict(self) -> dict:
        return {
            "position": self.position.to_dict(),
            "carry": list(self.carry),
            "windows_out": self.windows_out,
            "pass": self.pass_windows,
            "pass_tokens": self.pass_tokens,
        }

    def load_state_dict(self, state: dict) -> None:
        self.position = Position(**state["position"])
        self.carry, self.windows_out, self.pass_windows = list(state["carry"]), int(state["windows_out"]), state["pass"]
        self.pass_tokens = int(state["pass_tokens"])
        self._pieces = None


class PackedWindowStream:
    """Windows packed from streamed documents of one source or a weighted mix, shuffled through a seeded buffer."""

    def __init__(self, sources: list[tuple[object, float]], tokenizer, seq_len: int, seed: int = 0, buffer_windows=SHUFFLE_BUFFER_WINDOWS):
        if seq_len < 2:
            raise ParameterError("seq_len", f"{seq_len} is too short; use at least 2 tokens")
        total = sum(weight for _, weight in sources)
        self.sources = [_PackedSource(documents, tokenizer, seq_len) for documents, _ in sources]
        self.weights = [weight / total for _, weight in sources]
        self.seq_len, self.seed, self.buffer_windows = seq_len, seed, buffer_windows
        self.buffer = torch.empty((0, seq_len), dtype=torch.int32)
        self.generator = torch.Generator().manual_seed(seed)
        self.drawn = 0  # windows pulled from the sources (into the buffer)
        self.position = 0  # windows handed out
        parts = [f"{d.description}:{w:g}" for (d, _), w in zip(sources, self.weights)] if len(sources) > 1 else [sources[0][0].description]
        self.description = ", ".join(parts)

    num_windows = None  # unknown until the data has been read once

    def _next_source(self) -> _PackedSource:
        """Smooth weighted round-robin: the source furthest below its share of the windows drawn so far."""
        deficits = [w * (self.drawn + 1) - s.windows_out for w, s in zip(self.weights, self.sources)]
        return self.sources[max(range(len(deficits)), key=deficits.__getitem__)]

    def _draw(self) -> torch.Tensor:
        window = self._next_source().next_window()
        self.drawn += 1
        return window

    def take(self, count: int) -> torch.Tensor:
        if self.buffer.shape[0] < self.buffer_windows:
            fill = [self._draw() for _ in range(self.buffer_windows - self.buffer.shape[0])]
            self.buffer = torch.cat([self.buffer, torch.stack(fill)])
        rows = []
        for _ in range(count):
            slot = int(torch.randint(0, self.buffer.shape[0], (1,), generator=self.generator))
            rows.append(self.buffer[slot].clone())
            self.buffer[slot] = self._draw()
        self.position += count
        return torch.stack(rows).long()

    def passes(self) -> float | None:
        """How often the data was read, by the source read most (over 1: some text was seen again); None
        while no source has been read to its end (its size is then unknown: less than one pass)."""
        known = [self.position * w / s.pass_windows for w, s in zip(self.weights, self.sources) if s.pass_windows]
        return max(known) if known else None

    def identity(self) -> dict:
        return {"data": [s.documents.identity() for s in self.sources], "weights": self.weights, "seq_len": self.seq_len, "seed": self.seed}

    def state_dict(self) -> dict:
        return {
            "sources": [s.state_dict() for s in self.sources],
            "buffer": self.buffer.clone(),
            "generator": self.generator.get_state(),
            "drawn": self.drawn,
            "position": self.position,
        }

    def load_state_dict(self, state: dict) -> None:
        for source, saved in zip(self.sources, state["sources"]):
            source.load_state_dict(saved)
        self.buffer = state["buffer"].clone()
        self.generator.set_state(state["generator"])
        self.drawn, self.position = int(state["drawn"]), int(state["position"])


_WEIGHT = re.compile(r"^(?P<spec>.+):(?P<weight>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)$")


def parse_mix(spec: str) -> list[tuple[str, float]]:
    """`a.jsonl:0.7,dir/*.jsonl:0.3` -> [(spec, weight)]; a part without a weight weighs 1."""
    parts = [part.strip() for part in str(spec).split(",")]
    if any(not part for part in parts):
        raise ParameterError("recovery_data", f"'{spec}' has an empty part; write sources as SPEC[:WEIGHT],SPEC[:WEIGHT]")
    out = []
    for part in parts:
        match = _WEIGHT.match(part)
        source, weight = (match["spec"], float(match["weight"])) if match else (part, 1.0)
        if not weight > 0:
            raise ParameterError("recovery_data", f"the weight of {source} must be positive, got {weight:g}")
        out.append((source, weight))
    return out


def is_streamed(spec: str) -> bool:
    """Whether a data SPEC is streamed (a mix, shards, compressed or large files, a hub dataset) or read whole."""
    mix = parse_mix(spec)
    if len(mix) > 1 or _WEIGHT.match(str(spec).strip()):
        return True
    source = mix[0][0]
    if source in ("builtin", "self"):
        return False
    path = Path(source).expanduser()
    if path.is_dir() or any(ch in source for ch in "*?["):
        return True
    if path.is_file() or path.suffix.lower() in LOCAL_SUFFIXES + (".gz", ".parquet"):
        simple = path.suffix.lower() in LOCAL_SUFFIXES and not str(path).lower().endswith(".gz")
        return not (simple and path.is_file() and path.stat().st_size < IN_MEMORY_LIMIT_BYTES)
    return True  # a hub dataset


def documents_of(source: str, text_field: str = "text"):
    """The document reader of one source SPEC: local shard files, or a hub dataset (known name or id)."""
    path = Path(source).expanduser()
    local = path.exists() or any(ch in source for ch in "*?[") or any(source.lower().endswith(s) for s in SHARD_SUFFIXES + (".json",))
    if local:
        if path.suffix.lower() == ".json" and path.is_file():
            raise PrunekitError(f"{path}: a .json file is read whole; stream .jsonl shards instead (one record per line)")
        return ShardDocuments(source, text_field)
    name, _, split = source.partition(":")
    key = HUB_ALIASES.get(name.lower(), name.lower())
    if key in HUB_DATASETS:
        known = HUB_DATASETS[key]
        return HubDocuments(known.path, known.name, split or known.splits["calibration"], known.field, known.data_files)
    if "/" in name:
        return HubDocuments(name, None, split or "train", text_field)
    raise PrunekitError(f"unknown recovery data '{source}': use a file, a directory or glob of shards, or a hub dataset")


def streamed_windows(spec: str, tokenizer, *, seq_len: int, seed: int = 0, text_field: str = "text") -> PackedWindowStream:
    """A stream of `seq_len` windows from a SPEC: one source or a weighted mix `a:0.7,b:0.3`."""
    if tokenizer.eos_token_id is None:
        log.warning("the tokenizer has no EOS token: streamed documents are joined without a separator")
    sources = [(documents_of(source, text_field), weight) for source, weight in parse_mix(spec)]
    return PackedWindowStream(sources, tokenizer, seq_len, seed)
