"""Multilingual perplexity over parallel text (FLORES-200): the same sentences in every language,
so a pruned model's per-language perplexity ratio to the dense model shows which languages lost most."""

from __future__ import annotations

from pathlib import Path

from prunekit.data.windows import evaluation_windows, tokenize_text
from prunekit.errors import PrunekitError
from prunekit.evaluation.perplexity import perplexity


def flores_files(flores_dir: str | Path, languages: list[str] | None = None) -> dict[str, Path]:
    """{language code: file} for FLORES `*.dev` / `*.devtest` files in `flores_dir` (or its dev/ folder)."""
    root = Path(flores_dir).expanduser()
    folder = root / "dev" if (root / "dev").is_dir() else root
    if not folder.is_dir():
        raise PrunekitError(f"FLORES folder not found: {root}")
    files = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix in (".dev", ".devtest")}
    if not files:
        raise PrunekitError(f"no FLORES .dev/.devtest files in {folder}")
    if languages:
        missing = [lang for lang in languages if lang not in files]
        if missing:
            raise PrunekitError(f"languages {missing} not in {folder}; available: {', '.join(files)}")
        files = {lang: files[lang] for lang in languages}
    return files


def multilingual_perplexity(
    model,
    tokenizer,
    flores_dir: str | Path,
    *,
    languages: list[str] | None = None,
    seq_len: int = 512,
    max_windows: int | None = None,
    batch_size: int = 1,
    device=None,
    progress: bool = True,
) -> dict[str, dict]:
    """Per-language perplexity: each language's sentences joined by newlines, non-overlapping windows."""
    results = {}
    for language, path in flores_files(flores_dir, languages).items():
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            raise PrunekitError(f"{path} is empty")
        windows = evaluation_windows(tokenize_text(tokenizer, text), seq_len, max_windows, str(path))
        results[language] = perplexity(model, windows, batch_size=batch_size, device=device, progress=progress).to_dict()
    return results


def language_ratios(pruned: dict[str, dict], dense: dict[str, dict]) -> dict[str, float]:
    """Pruned / dense perplexity per language both were measured on (1.0 = nothing lost)."""
    return {lang: pruned[lang]["perplexity"] / dense[lang]["perplexity"] for lang in pruned if lang in dense}
