import gzip
import json
import resource
import subprocess
import sys
import textwrap

import pytest
import torch

from prunekit.data.documents import Position, ShardDocuments
from prunekit.data.windows import TokenWindows
from prunekit.errors import ParameterError, PrunekitError
from prunekit.recovery.window_stream import WindowOrder, is_streamed, parse_mix, streamed_windows

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def write_shards(directory, count, docs_per_shard=20, words=60, prefix="shard", gz=False, start=0):
    directory.mkdir(parents=True, exist_ok=True)
    for shard in range(count):
        lines = []
        for doc in range(docs_per_shard):
            n = start + shard * docs_per_shard + doc
            lines.append(json.dumps({"text": " ".join(WORDS[(n + i) % len(WORDS)] for i in range(words)) + f" doc{n}"}))
        payload = ("\n".join(lines) + "\n").encode()
        path = directory / f"{prefix}-{shard:04d}.jsonl{'.gz' if gz else ''}"
        path.write_bytes(gzip.compress(payload) if gz else payload)
    return directory


def drain(stream, windows, per_take=4):
    out = [stream.take(per_take) for _ in range(windows // per_take)]
    return torch.cat(out)


def test_a_shard_directory_streams_exactly_the_windows_asked_for(tmp_path, tiny_tokenizer):
    data = write_shards(tmp_path / "shards", 12)
    stream = streamed_windows(str(data), tiny_tokenizer, seq_len=32, seed=0)
    batch = drain(stream, 40)
    assert batch.shape == (40, 32) and batch.dtype == torch.long
    assert stream.position == 40 and stream.passes() is None  # not read to its end yet


def test_the_stream_is_deterministic_and_the_seed_changes_the_order(tmp_path, tiny_tokenizer):
    data = str(write_shards(tmp_path / "shards", 4))
    first = drain(streamed_windows(data, tiny_tokenizer, seq_len=16, seed=3), 24)
    again = drain(streamed_windows(data, tiny_tokenizer, seq_len=16, seed=3), 24)
    other = drain(streamed_windows(data, tiny_tokenizer, seq_len=16, seed=4), 24)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_documents_are_joined_with_eos(tmp_path, tiny_tokenizer):
    data = write_shards(tmp_path / "shards", 1, docs_per_shard=6, words=5)
    stream = streamed_windows(str(data), tiny_tokenizer, seq_len=8, seed=0)
    stream.buffer_windows = 1  # in reading order
    ids = drain(stream, 8, per_take=1).flatten().tolist()
    per_document = len(tiny_tokenizer("alpha beta gamma delta epsilon doc0")["input_ids"]) + 1
    assert ids.count(tiny_tokenizer.eos_token_id) >= len(ids) // (2 * per_document)


def test_a_resumed_stream_continues_exactly_where_it_stopped(tmp_path, tiny_tokenizer):
    data = str(write_shards(tmp_path / "shards", 3, docs_per_shard=10))
    unbroken = drain(streamed_windows(data, tiny_tokenizer, seq_len=16, seed=1), 120)
    first = streamed_windows(data, tiny_tokenizer, seq_len=16, seed=1)
    head = drain(first, 52)
    state = first.state_dict()
    torch.save(state, tmp_path / "state.pt")
    second = streamed_windows(data, tiny_tokenizer, seq_len=16, seed=1)
    second.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    tail = drain(second, 68)
    # the shuffle buffer's first fill read past the end of the data: the resumed stream crossed into a later pass
    assert torch.equal(torch.cat([head, tail]), unbroken)
    assert second.sources[0].position.epoch >= 1 and 0 < second.passes() < 1


def test_a_mix_gives_each_source_its_share_of_tokens(tmp_path, tiny_tokenizer):
    a = write_shards(tmp_path / "a", 3, prefix="a")
    b = write_shards(tmp_path / "b", 2, prefix="b", start=1000)
    stream = streamed_windows(f"{a}:0.7,{b}/*.jsonl:0.3", tiny_tokenizer, seq_len=16, seed=0)
    drain(stream, 400)
    drawn = [s.windows_out for s in stream.sources]
    shares = [n / sum(drawn) for n in drawn]
    assert abs(shares[0] - 0.7) < 0.02 and abs(shares[1] - 0.3) < 0.02


def test_gzip_and_parquet_shards_read_like_jsonl(tmp_path, tiny_tokenizer):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    plain = write_shards(tmp_path / "plain", 2)
    zipped = write_shards(tmp_path / "zipped", 2, gz=True)
    (tmp_path / "table").mkdir()
    texts = [json.loads(line)["text"] for p in sorted(plain.iterdir()) for line in p.read_text().splitlines()]
    pq.write_table(pa.table({"text": texts}), tmp_path / "table" / "all.parquet", row_group_size=7)
    reference = drain(streamed_windows(str(plain), tiny_tokenizer, seq_len=16, seed=0), 20)
    for other in (zipped, tmp_path / "table"):
        assert torch.equal(drain(streamed_windows(str(other), tiny_tokenizer, seq_len=16, seed=0), 20), reference)


def test_plain_text_shards_are_read_in_blocks_of_lines(tmp_path, tiny_tokenizer):
    path = tmp_path / "book.txt"
    path.write_text("".join(f"line {i} of a long book\n" for i in range(5000)))
    documents = ShardDocuments(str(path))
    pieces = list(zip(range(4), documents.pieces(Position())))
    assert [p.ends_document for _, p in pieces[:3]] == [False, False, True]
    resumed = next(documents.pieces(pieces[0][1].after))
    assert resumed.text == pieces[1][1].text


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: (d / "empty.jsonl").write_text(""), "empty.jsonl is empty"),
        (lambda d: (d / "cut.jsonl.gz").write_bytes(gzip.compress(b'{"text": "a b c"}\n' * 200)[:40]), "cut.jsonl.gz is truncated"),
        (lambda d: (d / "body.jsonl").write_text('{"body": "a b c"}\n'), "body.jsonl:1: no 'text' string"),
        (lambda d: (d / "deep.jsonl").write_text("[" * 100000 + "]" * 100000 + "\n"), "deep.jsonl:1 nests deeper than 64 levels"),
    ],
)
def test_a_bad_shard_is_one_line_naming_the_file(tmp_path, tiny_tokenizer, make, message):
    data = tmp_path / "shards"
    data.mkdir()
    make(data)
    with pytest.raises(PrunekitError, match=message.replace(".", r"\.")) as error:
        drain(streamed_windows(str(data), tiny_tokenizer, seq_len=16, seed=0), 4)
    assert "\n" not in str(error.value)


def test_a_text_field_names_the_records_text(tmp_path, tiny_tokenizer):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.jsonl").write_text("".join(json.dumps({"text": "x", "body": f"body words {i}"}) + "\n" for i in range(400)))
    stream = streamed_windows(str(tmp_path / "d"), tiny_tokenizer, seq_len=8, seed=0, text_field="body")
    text = tiny_tokenizer.decode(drain(stream, 8).flatten().tolist())
    assert "body words" in text


def test_which_data_is_streamed(tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("a few words")
    assert not is_streamed(str(small)) and not is_streamed("builtin") and not is_streamed("self")
    assert is_streamed(str(tmp_path)) and is_streamed(f"{tmp_path}/*.jsonl") and is_streamed("org/dataset")
    assert is_streamed(f"{small}:0.5,{small}:0.5")


def test_mix_weights_are_checked():
    assert parse_mix("a.jsonl:0.7,b/*.jsonl:0.3") == [("a.jsonl", 0.7), ("b/*.jsonl", 0.3)]
    assert parse_mix("wikitext2:train") == [("wikitext2:train", 1.0)]
    with pytest.raises(ParameterError, match="empty part"):
        parse_mix("a.jsonl,,b.jsonl")
    with pytest.raises(ParameterError, match="must be positive"):
        parse_mix("a.jsonl:0,b.jsonl:1")


def test_a_hub_dataset_streams_through_datasets(tmp_path, tiny_tokenizer):
    pytest.importorskip("datasets")
    from prunekit.data.documents import HubDocuments

    data = write_shards(tmp_path / "shards", 2)
    # the json builder with local files takes the same streaming path as a hub id
    documents = HubDocuments("json", None, "train", data_files=[str(p) for p in sorted(data.iterdir())])
    pieces = [p for _, p in zip(range(45), documents.pieces(Position()))]
    texts = [p.text for p in pieces[:40]]
    assert all(texts) and texts[0].endswith("doc0") and texts[39].endswith("doc39")
    assert pieces[40].text == "" and pieces[40].after.epoch == 1 and pieces[41].text == texts[0]
    resumed = next(documents.pieces(pieces[9].after))
    assert resumed.text == texts[10]


def test_in_memory_windows_keep_their_order_across_passes():
    ids = torch.arange(5 * 4).view(5, 4)
    order = WindowOrder(TokenWindows(ids, "ids", ids.numel()), seed=2)
    generator = torch.Generator().manual_seed(2)
    expected = torch.cat([torch.randperm(5, generator=generator) for _ in range(3)])[:13]
    assert torch.equal(torch.cat([order.take(6), order.take(7)]), ids[expected])
    resumed = WindowOrder(TokenWindows(ids, "ids", ids.numel()), seed=2)
    resumed.load_state_dict({"position": 6})
    assert torch.equal(resumed.take(7), ids[expected[6:]])


STREAM_RSS = textwrap.dedent(
    """
    import resource, sys
    from transformers import PreTrainedTokenizerFast
    from prunekit.recovery.window_stream import streamed_windows
    tokenizer = PreTrainedTokenizerFast.from_pretrained(sys.argv[2])
    stream = streamed_windows(sys.argv[1], tokenizer, seq_len=64, seed=0)
    for _ in range(int(sys.argv[3])):
        stream.take(8)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


def test_memory_does_not_grow_with_the_corpus(tmp_path, tiny_tokenizer):
    """10x the shards and 10x the windows read: peak RSS within 10% (nothing is held but the buffer)."""
    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    small = write_shards(tmp_path / "small", 4, docs_per_shard=200)
    large = write_shards(tmp_path / "large", 40, docs_per_shard=200)

    def peak(data, takes):
        command = [sys.executable, "-c", STREAM_RSS, str(data), str(tmp_path / "tok"), str(takes)]
        out = subprocess.run(command, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return int(out.stdout.split()[-1])

    assert peak(large, 2000) < 1.10 * peak(small, 200)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0
