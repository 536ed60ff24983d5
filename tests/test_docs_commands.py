"""Every concrete command line of the README and the method docs runs as written, on a tiny 18-block model (the
fewest that every command fits: `extend --to-blocks 36` at most doubles a model).

Only what a tiny CPU test cannot afford or reach is changed, by the table SHRINK below: the embedded model
becomes the tiny one, training budgets shrink to 2,048 tokens (a command that trains with the default budget
gets one), `fit` measures fewer windows at two types, hub data becomes local files of the same kind, and the
tiny encoder gets windows that fit its context. Lines with placeholders (docs/cli.md's synopsis) are not
commands and are left out.
"""

from __future__ import annotations

import gzip
import json
import re
import shlex
from pathlib import Path
from pydoc_data.topics import topics

import pytest
import torch

from prunekit.cli import main

from conftest import tiny_bert, tiny_model

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "docs/fit.md", "docs/flexigpt.md", "docs/iterabre.md", "docs/recovery.md", "docs/width.md"]
TRAINS = ("recover", "extend", "--recovery-data", "--method iterabre", "--method flexigpt")
SHRINK = [  # (pattern, replacement) applied to every command line
    (r"--recovery-tokens \d+", "--recovery-tokens 2048"),
    (r"--save-every \d+", "--save-every 1024"),
    (r"--ppl wikitext2", "--ppl wiki.test.raw"),  # the hub's WikiText-2 as a local file of the same layout
    (r"--tasks [\w,]+ ", ""),  # zero-shot tasks need lm-eval's datasets (tested with local files in test_evaluation_tasks)
]


def commands(page: str) -> list[str]:
    """The `prunekit ...` lines of a page's bash blocks, continuation lines joined, comments dropped."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", (ROOT / page).read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("prunekit ") and not re.search(r"\b[A-Z]{3,}\b|\[|\.\.\.", line):
                lines.append(line)
    return lines


def shrunk(line: str, model: Path, encoder: Path) -> list[str]:
    for pattern, replacement in SHRINK:
        line = re.sub(pattern, replacement, line)
    if any(word in line for word in TRAINS) and "--recovery-tokens" not in line:
        line += " --recovery-tokens 2048"
    argv = shlex.split(line)[1:]
    if argv[0] == "fit":  # its measuring budget: fewer windows, two types, one candidate
        argv += ["--windows", "8", "--seq-len", "64", "--heldout-windows", "4", "--types", "q8_0,q4_0", "--candidates", "1"]
    if "all-minilm-l6-v2" in argv:
        argv += ["--seq-len", "64"]  # the tiny encoder's context is 128 positions, MiniLM's 512
    argv = [str(model) if a == "smollm2-135m" else str(encoder) if a == "all-minilm-l6-v2" else a for a in argv]
    return argv + ["--quiet"] * (argv[0] not in ("report", "cache"))


@pytest.fixture
def workspace(tmp_path, tiny_tokenizer, bert_tokenizer, monkeypatch):
    """A working directory with the tiny models and the data files the commands name."""
    model = tmp_path / "models" / "tiny-18"
    tiny = tiny_model("llama", num_layers=18)
    tiny.config.max_position_embeddings = 1024
    tiny.save_pretrained(model)
    tiny_tokenizer.save_pretrained(model)
    encoder = tmp_path / "models" / "tiny-bert"
    tiny_bert().save_pretrained(encoder)
    bert_tokenizer.save_pretrained(encoder)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))  # fit's library goes to prunekit's cache
    keys = sorted(topics)
    records = [json.dumps({"text": topics[k]}) for k in keys]
    Path("c4.jsonl").write_text("\n".join(records[::2]) + "\n")
    for folder in ("c4", "shards"):
        Path(folder).mkdir()
        for part in range(2):
            Path(folder, f"part-{part}.jsonl").write_text("\n".join(records[part::4]) + "\n")
    with gzip.open("c4/part-2.jsonl.gz", "wt") as handle:
        handle.write("\n".join(records[2::4]) + "\n")
    Path("code").mkdir()
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [topics[k] for k in keys[3::4]]}), "code/part-0.parquet")
    Path("wiki.test.raw").write_text("\n".join(f" = {k} = \n {topics[k]}" for k in keys[1::3]))
    recipe = (ROOT / "docs" / "python-api.md").read_text().split("```yaml\n")[1].split("```")[0]  # the docs' recipe file
    Path("recipe.yaml").write_text(re.sub(r"tokens: \d+", "tokens: 2048", recipe))
    torch.manual_seed(0)
    return model, encoder


def run(capsys, argv: list[str]) -> None:
    code = main(argv)
    _, err = capsys.readouterr()
    assert code == 0, f"prunekit {' '.join(argv)}\n{err}"


def prepare(page: str, model: Path, capsys) -> None:
    """What a page's commands take as given: an earlier pruned model (recovery.md), dense results (README)."""
    if page == "docs/recovery.md":
        run(capsys, ["prune", "--model", str(model), "--method", "shortgpt", "--remove", "6", "--out", "out/smol-24", "--quiet"])


def test_every_page_has_commands():
    assert all(commands(page) for page in PAGES)
    assert len(commands("README.md")) == 10


@pytest.mark.parametrize("page", PAGES)
def test_the_commands_of_each_page_run_in_order_as_written(page, workspace, capsys):
    model, encoder = workspace
    prepare(page, model, capsys)
    for line in commands(page):
        argv = shrunk(line, model, encoder)
        if argv[0] == "report":  # the README's report compares the dense model's results with the pruned one's
            run(capsys, ["eval", "--model", str(model), "--ppl", "wiki.test.raw", "--speed", "--out", "eval-dense.json", "--quiet"])
        run(capsys, argv)
    if page == "README.md":
        assert Path("out/depth/report/report.md").is_file() and Path("report/report.html").is_file()
        evaluation = json.loads(Path("out/depth/prunekit_eval.json").read_text())
        pruned_disk = sum(p.stat().st_size for p in Path("out/depth").glob("*.safetensors"))
        assert evaluation["pruned"]["speed"]["disk_bytes"] == pruned_disk < evaluation["dense"]["speed"]["disk_bytes"]
        assert Path("width-q4.gguf").stat().st_size > 0 and not Path("out/depth.run").exists()
