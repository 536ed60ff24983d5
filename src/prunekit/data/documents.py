"""Documents read one at a time from shard files or a streamed hub dataset, each with a position to resume from.

Recovery budgets of billions of tokens cannot be held in memory, so these readers never hold a corpus:
they yield one document (or, for plain text, one block of lines) at a time, count where they are
(pass, file, record), and continue from a saved position by skipping records without tokenizing them.
Every read error is one line that names the file.
"""

from __future__ import annotations

import glob
import gzip
import io
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from prunekit.data.sources import text_of_record
from prunekit.errors import PrunekitError
from prunekit.fingerprints import data_file_digest
from prunekit.jsonfiles import loads_limited

SHARD_SUFFIXES = (".txt", ".raw", ".jsonl", ".jsonl.gz", ".json.gz", ".txt.gz", ".parquet")
LINES_PER_TEXT_BLOCK = 2000  # plain-text files are read in blocks of lines, so one huge file never sits in memory


@dataclass
class Position:
    """Where a reader is: the pass over its data, the file within the pass, the record within the file."""

    epoch: int = 0
    file: int = 0
    record: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Piece:
    """Some text, whether it ends a document (the packer appends EOS there), and the position after it."""

    text: str
    ends_document: bool
    after: Position


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in sorted(SHARD_SUFFIXES, key=len, reverse=True) if name.endswith(s)), path.suffix.lower())


def shard_paths(spec: str) -> list[Path]:
    """The shard files a SPEC names: one file, every shard file of a directory (recursively), or a glob."""
    path = Path(spec).expanduser()
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and _suffix(p) in SHARD_SUFFIXES)
        where = f"directory {path}"
    elif any(ch in spec for ch in "*?["):
        found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        where = f"pattern {spec}"
    else:
        if not path.is_file():
            raise PrunekitError(f"data file not found: {path}")
        found, where = [path], str(path)
    if not found:
        raise PrunekitError(f"{where} holds no data shards; use files ending in {', '.join(SHARD_SUFFIXES)}")
    for shard in found:
        if _suffix(shard) not in SHARD_SUFFIXES:
            raise PrunekitError(f"unsupported data shard {shard}; use {', '.join(SHARD_SUFFIXES)}")
        if shard.stat().st_size == 0:
            raise PrunekitError(f"data shard {shard} is empty; remove it or fill it")
    return found


def _record_text(line: str, path: Path, line_no: int, field: str) -> str:
    return text_of_record(loads_limited(line, f"{path}:{line_no}"), path, line_no, field)


def _open_lines(path: Path) -> io.TextIOBase:
    if _suffix(path).endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")  # noqa: SIM115 (closed by the caller's with)


def _line_pieces(path: Path, start: int, field: str, file_index: int, epoch: int) -> Iterator[Piece]:
    """JSON lines: one record per line; plain text: blocks of lines, one document per file."""
    is_json = ".jsonl" in _suffix(path) or _suffix(path) == ".json.gz"
    record, block, emitted_any = 0, [], False
    with _open_lines(path) as handle:
        for line_no, line in enumerate(handle, 1):
            if is_json:
                if not line.strip():
                    continue
                if record >= start:
                    emitted_any = True
                    yield Piece(_record_text(line, path, line_no, field), True, Position(epoch, file_index, record + 1))
                record += 1
                continue
            if line_no <= start:
                continue
            block.append(line)
            if len(block) == LINES_PER_TEXT_BLOCK:
                emitted_any = True
                yield Piece("".join(block), False, Position(epoch, file_index, line_no))
                block = []
        if not is_json and (block or emitted_any or start):
            yield Piece("".join(block), True, Position(epoch, file_index + 1, 0))
        elif is_json and not emitted_any and start == 0:
            raise PrunekitError(f"data shard {path} holds no records; remove it or fill it")


def _parquet_pieces(path: Path, start: int, field: str, file_index: int, epoch: int) -> Iterator[Piece]:
    try:
        import pyarrow.parquet as pq
    except ImportError as error:
        raise PrunekitError(f"reading {path} needs pyarrow: `pip install pyarrow` (or convert the shard to .jsonl)") from error
    try:
        handle = pq.ParquetFile(path)
    except Exception as error:
        raise PrunekitError(f"{path} is not a readable parquet file ({str(error).splitlines()[0][:120]})") from error
    if field not in handle.schema_arrow.names:
        raise PrunekitError(f"{path}: no '{field}' column (its columns: {', '.join(handle.schema_arrow.names)}); name the text field")
    record = 0
    for batch in handle.iter_batches(batch_size=1024, columns=[field]):
        if record + batch.num_rows <= start:
            record += batch.num_rows
            continue
        for value in batch.column(0).to_pylist():
            if record >= start:
                if not isinstance(value, str):
                    raise PrunekitError(f"{path}: row {record} has no '{field}' string")
                yield Piece(value, True, Position(epoch, file_index, record + 1))
            record += 1
    if record == 0:
        raise PrunekitError(f"data shard {path} holds no rows; remove it or fill it")


class ShardDocuments:
    """The documents of local shard files (.txt, .raw, .jsonl, .jsonl.gz, .parquet) in sorted order, pass after pass."""

    def __init__(self, spec: str, text_field: str = "text"):
        self.paths = shard_paths(spec)
        self.text_field = text_field
        self.description = str(Path(spec).expanduser()) if len(self.paths) > 1 else str(self.paths[0])

    def identity(self) -> dict:
        """What a resumed run must find again: the same files with the same content (sizes and sampled bytes)."""
        return {
            "files": [str(p) for p in self.paths],
            "bytes": [p.stat().st_size if p.exists() else None for p in self.paths],
            "content": [data_file_digest(p) if p.is_file() else None for p in self.paths],
        }

    def pieces(self, position: Position) -> Iterator[Piece]:
        epoch, file_index, record = position.epoch, position.file, position.record
        while True:
            for index in range(file_index, len(self.paths)):
                path = self.paths[index]
                start = record if index == file_index else 0
                reader = _parquet_pieces if _suffix(path) == ".parquet" else _line_pieces
                try:
                    for piece in reader(path, start, self.text_field, index, epoch):
                        if piece.after.file == len(self.paths):
                            piece = Piece(piece.text, piece.ends_document, Position(epoch, len(self.paths), 0))
                        yield piece
                except FileNotFoundError as error:
                    raise PrunekitError(f"data shard {path} disappeared while reading; restore it and resume") from error
                except (EOFError, gzip.BadGzipFile, zlib.error) as error:
                    raise PrunekitError(f"data shard {path} is truncated or not gzip ({error}); replace or remove it") from error
                except UnicodeDecodeError as error:
                    raise PrunekitError(f"data shard {path} is not UTF-8 text") from error
                except OSError as error:
                    raise PrunekitError(f"cannot read data shard {path}: {error}") from error
            epoch, file_index, record = epoch + 1, 0, 0
            yield Piece("", False, Position(epoch, 0, 0))  # marks the start of the next pass


class HubDocuments:
    """A hub dataset streamed through `datasets` (nothing downloaded whole); resumes by skipping records."""

    def __init__(self, path: str, name: str | None, split: str, text_field: str = "text", data_files=None, builder_kwargs=None):
        self.path, self.name, self.split, self.text_field, self.data_files = path, name, split, text_field, data_files
        self.description = f"{path}{'/' + name if name else ''}:{split} (streamed)"

    def identity(self) -> dict:
        return {"hub": self.path, "name": self.name, "split": self.split, "data_files": self.data_files}

    def _stream(self):
        try:
            import datasets
        except ImportError as error:
            raise PrunekitError(f"streaming {self.path} needs `pip install datasets` (or pass local shard files)") from error
        kwargs = {"data_files": self.data_files} if self.data_files else {}
        try:
            return datasets.load_dataset(self.path, self.name, split=self.split, streaming=True, **kwargs)
        except Exception as error:
            raise PrunekitError(
                f"cannot stream {self.path} (split {self.split}): {str(error).splitlines()[0][:160]}; pass local shard files instead"
            ) from error

    def pieces(self, position: Position) -> Iterator[Piece]:
        epoch, record = position.epoch, position.record
        while True:
            stream = self._stream()
            if record:
                stream = stream.skip(record)
            count = record
            for row in stream:
                text = row.get(self.text_field) if isinstance(row, dict) else None
                if not isinstance(text, str):
                    raise PrunekitError(f"{self.description}: record {count} has no '{self.text_field}' string; name the text field")
                count += 1
                yield Piece(text, True, Position(epoch, 0, count))
            if count == 0:
                raise PrunekitError(f"{self.description} has no records")
            epoch, record = epoch + 1, 0
            yield Piece("", False, Position(epoch, 0, 0))
