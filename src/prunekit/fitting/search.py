"""`prunekit fit`: the best model within a budget, against quantizing the dense model alone.

The order of work: the dense model's quantization ladder (each type's file measured in llama.cpp: bytes,
held-out perplexity, decode speed), two probe files that calibrate the decode-time model, a check that the
targets can be reached at all, the per-layer library (cached), the solve per GGUF type, then the best few
candidates built whole (LIAR's listed widths after any dropped blocks), exported, measured, and set beside
uniform ShortGPT and uniform LIAR at the same type and the dense ladder. The winner is the contender that meets
every target by measurement with the lowest held-out perplexity; when that is a dense quantized file, the fit
says so and returns it.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prunekit.api import PruneResult, prune, save
from prunekit.errors import PrunekitError
from prunekit.evaluation.llama_cpp import llama_cpp_speed, llama_cpp_window_nll, paired_decode_speed
from prunekit.evaluation.significance import compare
from prunekit.export.gguf_layout import DECI_FAMILIES, NATIVE_ARCHITECTURES
from prunekit.export.gguf_writer import check_gguf_output, export_gguf
from prunekit.fingerprints import token_digest
from prunekit.fitting.costs import DROPPED, GgufTypes, LatencyModel, LayerChoice, Structure, dense_structure, structure_params
from prunekit.fitting.library import Library, ModelShape, build_library, channel_options, kv_options, library_key
from prunekit.fitting.solver import Budget, solve
from prunekit.fitting.targets import FitTargets, size_text
from prunekit.jsonfiles import read_json_object, write_json_atomically
from prunekit.methods.liar.config import LiarConfig
from prunekit.models.adapters import ModelAdapter, parameter_count
from prunekit.models.cache import mark_entry, writable_cache_dir
from prunekit.models.export import check_output_dir, with_loaded_from

DEFAULT_TYPES = ("q8_0", "q6_k", "q4_k_m", "q3_k_m", "q2_k")
REPORT_FILE = "fit_report.json"
RECIPE_FILE = "fit_recipe.json"


@dataclass
class Contender:
    """One measured file: a dense quantized model, a baseline or a fitted candidate."""

    name: str
    kind: str  # dense, candidate, shortgpt, liar-uniform
    gguf_type: str
    params: int
    bytes: int
    nll: list[float]
    tokens_per_s: float
    speedup: float = 1.0  # over the dense file of the same type
    predicted_bytes: int | None = None
    predicted_params: int | None = None
    predicted_speedup: float | None = None
    predicted_nll: float | None = None
    structure: list | None = None  # [kv_groups, channels] per dense layer ([0, 0]: dropped)
    also: dict = field(default_factory=dict)  # name -> NLL per window on further held-out sets (not used to choose)
    recipe: list | None = None
    seconds: float = 0.0
    meets: bool = False

    @property
    def mean_nll(self) -> float:
        return sum(self.nll) / len(self.nll)

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll)


@dataclass
class FitResult:
    chosen: Contender
    contenders: list[Contender]
    report: dict
    out: Path | None = None
    gguf: Path | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class _Measured:
    """What the dense ladder and the probes measured, kept in the library's directory with the dense files."""

    types: dict[str, GgufTypes]
    dense: dict[str, Contender]
    files: dict[str, Path]
    latency: LatencyModel | None = None


@dataclass
class _Run:
    """What building and measuring a contender needs: the dense model, the data, the ladder and the library."""

    model: object
    tokenizer: object
    targets: FitTargets
    calibration: object
    heldout: object
    liar: LiarConfig
    threads: int
    prompt: list[int]
    work: Path
    measured: _Measured
    library: Library | None = None
    progress: bool = True


SPEED_GENERATE = 64  # tokens decoded per timed run
SPEED_ROUNDS = 5  # alternating runs of a file and the dense file of its type


def _exported(model, tokenizer, work: Path, name: str, gguf_type: str) -> Path:
    path = work / f"{name}.{gguf_type}.gguf"
    export_gguf(model, tokenizer, path, gguf_type=gguf_type, overwrite=True, name=name)
    return path


def _dense_ladder(model, tokenizer, types, cache: Path, heldout, threads: int, prompt, shape: ModelShape, progress) -> _Measured:
    """The dense model at every type: its file (kept in the library's directory), held-out NLL per window, decode speed."""
    key = {"heldout": token_digest(heldout.input_ids), "threads": threads, "prompt": len(prompt)}
    measured = _Measured({}, {}, {})
    params = parameter_count(model)
    for gguf_type in types:
        recorded, path = cache / f"dense-{gguf_type}.json", cache / f"dense.{gguf_type}.gguf"
        if recorded.is_file() and path.is_file():
            data = read_json_object(recorded, "fit measurement")
            if data.get("key") == key and data["contender"]["bytes"] == path.stat().st_size:
                measured.types[gguf_type] = GgufTypes.read(path, gguf_type, shape.num_layers)
                measured.dense[gguf_type] = Contender(**data["contender"])
                measured.files[gguf_type] = path
                continue
        started = time.perf_counter()
        if progress:
            print(f"fit: the dense model at {gguf_type} (export, perplexity and speed in llama.cpp)", flush=True)
        path = _exported(model, tokenizer, cache, "dense", gguf_type)
        types_ = GgufTypes.read(path, gguf_type, shape.num_layers)
        nll = llama_cpp_window_nll(path, heldout, threads)
        tps = llama_cpp_speed(path, prompt, generate=SPEED_GENERATE, repeats=SPEED_ROUNDS, threads=threads)["generation_tokens_per_s"]
        contender = Contender(f"dense {gguf_type}", "dense", gguf_type, params, path.stat().st_size, nll, tps)
        contender.seconds = time.perf_counter() - started
        write_json_atomically(recorded, {"key": key, "contender": asdict(contender)})
        measured.types[gguf_type], measured.dense[gguf_type], measured.files[gguf_type] = types_, contender, path
    return measured


def _latency(
    model, tokenizer, calibration, measured: _Measured, work: Path, cache: Path, threads, prompt, shape: ModelShape, progress
) -> LatencyModel:
    """b and c of the decode-time model from two probes at the ladder's first type, each timed in alternation with the
    dense file: every other block dropped; every FFN at half its channels (no reconstruction: only shapes matter)."""
    probe_type = next(iter(measured.types))
    recorded = cache / f"latency-{probe_type}-{threads}.json"
    if recorded.is_file():
        return LatencyModel(**read_json_object(recorded, "fit latency"))
    types = measured.types[probe_type]
    dense_block = types.block_bytes(shape, dense_structure(shape))
    dropped = list(range(1, shape.num_layers, 2))
    depth = Structure([DROPPED if i in dropped else LayerChoice(shape.num_kv, shape.width) for i in range(shape.num_layers)])
    width = Structure([LayerChoice(shape.num_kv, shape.width // 2)] * shape.num_layers)
    if progress:
        print(f"fit: two probe files for the decode-time model ({probe_type})", flush=True)
    ratios = []
    probes = (
        ("probe-depth", [{"method": "blocks", "blocks": dropped}]),
        ("probe-width", [{"method": "liar", "ffn_ratio": 0.5, "reconstruction": "none", "criterion": "magnitude", "channel_multiple": 1}]),
    )
    for name, recipe in probes:
        pruned = prune(model, recipe, data=calibration, progress=False).model
        path = _exported(pruned, tokenizer, work, name, probe_type)
        ratios.append(paired_decode_speed(path, measured.files[probe_type], prompt, SPEED_GENERATE, SPEED_ROUNDS, threads))
        path.unlink()
        del pruned
    fractions = [(types.block_bytes(shape, s) / dense_block, len(s.kept) / shape.num_layers) for s in (depth, width)]
    # each probe's speed against its own alternating dense runs, the dense speed taken as 1
    fitted = LatencyModel.fit(1.0, ratios[0][0] / ratios[0][1], fractions[0], ratios[1][0] / ratios[1][1], fractions[1])
    fitted.probes["tokens_per_s"] = ratios
    write_json_atomically(recorded, fitted.to_dict())
    return fitted


def _reachable(shape: ModelShape, measured: _Measured, latency: LatencyModel | None, uniform: bool = False) -> dict:
    """The least bytes and parameters and the highest predicted speed-up any library structure reaches (one layer kept;
    its heads all kept where the family's GGUF form holds no pruned heads)."""
    kv = shape.num_kv if uniform else min(kv_options(shape.num_kv) or [shape.num_kv])
    smallest = LayerChoice(kv, min(channel_options(shape.width, 1)))
    one = Structure([smallest] + [DROPPED] * (shape.num_layers - 1))
    best_bytes, best_speedup = None, None
    for gguf_type, types in measured.types.items():
        sizes = [
            types.structure_bytes(shape, Structure([smallest if j == i else DROPPED for j in range(shape.num_layers)]))
            for i in range(shape.num_layers)
        ]
        if best_bytes is None or min(sizes) < best_bytes[0]:
            best_bytes = (min(sizes), gguf_type)
        speedup = _predicted_speedup(shape, types, latency, one)
        if speedup is not None:
            best_speedup = max(best_speedup or 0.0, speedup)
    return {"bytes": best_bytes, "params": structure_params(shape, one), "speedup": best_speedup}


def _check_reachable(targets: FitTargets, reach: dict) -> None:
    if targets.max_bytes is not None and reach["bytes"] is not None and targets.max_bytes < reach["bytes"][0]:
        raise PrunekitError(
            f"--max-bytes {size_text(targets.max_bytes)} cannot be met: the smallest file any structure reaches is "
            f"{size_text(reach['bytes'][0])} (one layer kept, {reach['bytes'][1]}); raise --max-bytes or add a smaller --types"
        )
    if targets.max_params is not None and targets.max_params < reach["params"]:
        raise PrunekitError(
            f"--max-params {targets.max_params:,} cannot be met: the fewest parameters any structure keeps is {reach['params']:,} "
            "(the embeddings and one layer); raise --max-params"
        )
    if targets.min_speedup is not None and reach["speedup"] is not None and targets.min_speedup > reach["speedup"]:
        raise PrunekitError(
            f"--min-speedup {targets.min_speedup:g} cannot be met: the fastest structure is predicted at {reach['speedup']:.2f}x "
            "(one layer kept); lower --min-speedup"
        )


def check_fittable(model) -> bool:
    """Fit measures every candidate in llama.cpp, so the family needs a GGUF form. Returns whether its candidates
    must keep one width for all layers (families whose llama.cpp architecture reads one width, and no pruned heads:
    Gemma-3, Phi-3, Qwen3); the per-layer form (`deci`) runs plain Llama blocks only."""
    family = ModelAdapter(model).family.name
    if family not in NATIVE_ARCHITECTURES:
        raise PrunekitError(
            f"fit measures its candidates in llama.cpp, and {family} models have no GGUF form in prunekit; "
            f"fit supports {', '.join(NATIVE_ARCHITECTURES)} models"
        )
    return family not in DECI_FAMILIES


def _recipe(structure: Structure, shape: ModelShape, liar: LiarConfig) -> list[dict]:
    recipe = []
    if structure.dropped:
        recipe.append({"method": "blocks", "blocks": structure.dropped})
    kept = [structure.layers[i] for i in structure.kept]
    if any(c.kv_groups < shape.num_kv or c.channels < shape.width for c in kept):
        recipe.append(
            {
                "method": "liar",
                "allocation": "listed",
                "channels": [c.channels for c in kept],
                "kv_groups": [c.kv_groups for c in kept],
                "criterion": liar.criterion,
                "reconstruction": liar.reconstruction,
                "damping": liar.damping,
                "seed": liar.seed,
            }
        )
    return recipe


def _build(run: _Run, recipe: list, name: str, gguf_type: str):
    result = prune(run.model, recipe, data=run.calibration, progress=False) if recipe else PruneResult(run.model, None)
    return result, _exported(result.model, run.tokenizer, run.work, name.replace(" ", "-"), gguf_type)


def _structure_list(structure: Structure) -> list:
    return [[c.kv_groups, c.channels] for c in structure.layers]


def fit(
    model,
    tokenizer,
    targets: FitTargets,
    calibration,
    heldout,
    *,
    out: str | os.PathLike | None = None,
    gguf: str | os.PathLike | None = None,
    types: tuple[str, ...] = DEFAULT_TYPES,
    candidates: int = 3,
    library_dir: str | os.PathLike | None = None,
    score_windows: int = 8,
    score_seq_len: int = 256,
    liar: LiarConfig | None = None,
    channel_multiple: int = 64,
    threads: int | None = None,
    also_measure: dict | None = None,
    overwrite: bool = False,
    protected: list = (),
    progress: bool = True,
) -> FitResult:
    """Fit `model` to `targets`; write the chosen checkpoint to `out` and its GGUF file to `gguf` (when given).

    `also_measure` ({name: windows}) measures every built file on further held-out sets too, for the report only."""
    targets.check()
    uniform = check_fittable(model)
    started = time.perf_counter()
    protected = with_loaded_from(model, protected)
    if out is not None:
        check_output_dir(out, overwrite, protected)
    if gguf is not None:
        check_gguf_output(gguf, overwrite, protected)
    liar = liar or LiarConfig(ratio=0.5)
    threads = threads or max(1, len(os.sched_getaffinity(0)))
    shape = ModelShape.of(model)
    multiple = channel_multiple if shape.width >= 1024 else 1
    scoring = type(calibration)(
        calibration.input_ids[:score_windows, :score_seq_len].contiguous(), calibration.description, calibration.total_tokens_available
    )
    settings = {
        "criterion": liar.criterion,
        "reconstruction": liar.reconstruction,
        "damping": liar.damping,
        "seed": liar.seed,
        "multiple": multiple,
    }
    cached = library_dir is None
    library_dir = (
        Path(library_dir) if library_dir else writable_cache_dir("fit-library") / library_key(model, calibration, scoring, settings)
    )
    library_dir.mkdir(parents=True, exist_ok=True)
    prompt = heldout.input_ids[0, :128].tolist()
    timings = {}
    with tempfile.TemporaryDirectory(prefix="prunekit-fit-") as work_dir:
        work = Path(work_dir)
        clock = time.perf_counter()
        measured = _dense_ladder(model, tokenizer, types, library_dir, heldout, threads, prompt, shape, progress)
        measured.latency = _latency(model, tokenizer, calibration, measured, work, library_dir, threads, prompt, shape, progress)
        timings["ladder_and_probes_s"] = time.perf_counter() - clock
        _check_reachable(targets, _reachable(shape, measured, measured.latency, uniform))
        clock = time.perf_counter()
        library = build_library(
            model, calibration, scoring, library_dir, liar=liar, channel_multiple=multiple, heads=not uniform, progress=progress
        )
        if cached:
            mark_entry(library_dir, getattr(model.config, "_name_or_path", "") or "model")  # `prunekit cache --clear` may remove it
        timings["library_s"] = time.perf_counter() - clock
        clock = time.perf_counter()
        planned = _solve_all(library, targets, measured, candidates, uniform)
        timings["solve_s"] = time.perf_counter() - clock
        contenders = list(measured.dense.values())
        for contender in contenders:
            contender.meets = targets.met(contender.bytes, contender.params, 1.0)
        if not planned and not any(c.meets for c in contenders):
            raise PrunekitError(f"no structure in the library meets {targets.describe()}; loosen a target")
        clock = time.perf_counter()
        run = _Run(model, tokenizer, targets, calibration, heldout, liar, threads, prompt, work, measured, library, progress)
        built = {}
        for rank, (gguf_type, solution, predicted_nll) in enumerate(planned):
            contender, result, path = _candidate(run, solution.structure, gguf_type, f"fit {rank + 1}", predicted_nll)
            contenders.append(contender)
            built[contender.name] = (result, path)
        timings["candidates_s"] = time.perf_counter() - clock
        clock = time.perf_counter()
        baseline_type = planned[0][0] if planned else min((c for c in contenders if c.meets), key=lambda c: c.mean_nll).gguf_type
        for contender, result, path in _baselines(run, baseline_type):
            contenders.append(contender)
            built[contender.name] = (result, path)
        timings["baselines_s"] = time.perf_counter() - clock
        for contender in contenders:
            path = measured.files[contender.gguf_type] if contender.kind == "dense" else built[contender.name][1]
            for name, windows in (also_measure or {}).items():
                if name not in contender.also:
                    contender.also[name] = llama_cpp_window_nll(path, windows, threads)
        eligible = [c for c in contenders if c.meets]
        if not eligible:
            raise PrunekitError(
                f"no built file meets {targets.describe()} by measurement (the predictions were off; see the contenders); loosen a target"
            )
        chosen = min(eligible, key=lambda c: c.mean_nll)
        report = _report(chosen, contenders, targets, library, measured, timings, started, calibration, heldout, threads, shape, uniform)
        notes = report["notes"]
        if chosen.kind == "dense":
            result, path = PruneResult(model, None), measured.files[chosen.gguf_type]
        else:
            result, path = built[chosen.name]
        written = gguf_out = None
        if out is not None:
            extra = {REPORT_FILE: report}
            if chosen.recipe:
                extra[RECIPE_FILE] = {"stages": chosen.recipe}
            written = save(
                result if result.plan is not None else result.model,
                out,
                tokenizer,
                overwrite=overwrite,
                extra_json=extra,
                protected=protected,
            )
        if gguf is not None:
            gguf_out = Path(gguf)
            staged = gguf_out.with_name(f".{gguf_out.name}.partial")
            shutil.copyfile(path, staged)
            os.replace(staged, gguf_out)
    return FitResult(chosen, contenders, report, written, gguf_out, notes)


def _solve_all(library: Library, targets: FitTargets, measured: _Measured, count: int, uniform: bool = False) -> list:
    """(type, solution, predicted NLL) of the best `count` distinct candidates over every type, best first."""
    budget = Budget(targets.max_params, targets.max_bytes, 1 / targets.min_speedup if targets.min_speedup else None)
    found = []
    for gguf_type, types in measured.types.items():
        for solution in solve(library, budget, types=types, latency=measured.latency, count=count, uniform=uniform):
            found.append((gguf_type, solution, measured.dense[gguf_type].mean_nll + solution.predicted_kl))
        if budget.max_bytes is None and budget.max_relative_time is None:
            break  # parameters alone: one type's structures are every type's
    found.sort(key=lambda item: item[2])  # distinct already: the solver cuts each earlier answer and never returns the dense one
    return found[:count]


def _predicted_speedup(shape, types: GgufTypes, latency: LatencyModel | None, structure: Structure) -> float | None:
    if latency is None:
        return None
    fraction = types.block_bytes(shape, structure) / types.block_bytes(shape, dense_structure(shape))
    return 1 / max(1e-6, latency.relative_time(fraction, len(structure.kept) / shape.num_layers))


def _measured_contender(run: _Run, name: str, kind: str, gguf_type: str, result, path: Path, started: float) -> Contender:
    nll = llama_cpp_window_nll(path, run.heldout, run.threads)
    tps, dense_tps = paired_decode_speed(path, run.measured.files[gguf_type], run.prompt, SPEED_GENERATE, SPEED_ROUNDS, run.threads)
    speedup = tps / dense_tps
    contender = Contender(name, kind, gguf_type, parameter_count(result.model), path.stat().st_size, nll, tps, speedup)
    contender.meets = run.targets.met(contender.bytes, contender.params, speedup)
    contender.seconds = time.perf_counter() - started
    return contender


def _predicted(run: _Run, contender: Contender, structure: Structure) -> None:
    shape, types = run.library.shape, run.measured.types[contender.gguf_type]
    written_name = contender.name.replace(" ", "-")  # the file's general.name, as _build writes it
    contender.predicted_bytes = types.structure_bytes(shape, structure, run.liar.reconstruction, name=written_name)
    contender.predicted_params = structure_params(shape, structure, run.liar.reconstruction)
    contender.predicted_speedup = _predicted_speedup(shape, types, run.measured.latency, structure)


def _candidate(run: _Run, structure: Structure, gguf_type: str, name: str, predicted_nll: float):
    started = time.perf_counter()
    shape = run.library.shape
    recipe = _recipe(structure, shape, run.liar)
    if run.progress:
        print(f"fit: building {name} at {gguf_type}: {structure.describe(shape)}", flush=True)
    result, path = _build(run, recipe, name, gguf_type)
    contender = _measured_contender(run, name, "candidate", gguf_type, result, path, started)
    _predicted(run, contender, structure)
    contender.predicted_nll = predicted_nll
    contender.structure = _structure_list(structure)
    contender.recipe = recipe
    return contender, result, path


def _baselines(run: _Run, gguf_type: str):
    """Uniform ShortGPT (fewest blocks) and uniform LIAR (widest FFN) that the cost model says meet the targets, at `gguf_type`."""
    shape, types, liar = run.library.shape, run.measured.types[gguf_type], run.liar

    def fits(structure: Structure) -> bool:
        speedup = _predicted_speedup(shape, types, run.measured.latency, structure)
        return run.targets.met(types.structure_bytes(shape, structure), structure_params(shape, structure), speedup)

    out = []
    dense_layer = LayerChoice(shape.num_kv, shape.width)
    for remove in range(1, shape.num_layers):
        depth = Structure([DROPPED if i >= shape.num_layers - remove else dense_layer for i in range(shape.num_layers)])
        if fits(depth):
            out.append((f"shortgpt -{remove}", "shortgpt", [{"method": "shortgpt", "remove": remove}], depth))
            break
    step = run.library.multiple  # the widths LIAR's own default rounds to (64 for a real model's FFN)
    for channels in range(shape.width - step, 0, -step):
        width = Structure([LayerChoice(shape.num_kv, channels)] * shape.num_layers)
        if fits(width):
            options = {"ffn_ratio": 1 - channels / shape.width, "channel_multiple": 1, "criterion": liar.criterion}
            out.append(
                (
                    f"liar uniform ffn {channels}",
                    "liar-uniform",
                    [{"method": "liar", **options, "reconstruction": liar.reconstruction}],
                    width,
                )
            )
            break
    for name, kind, recipe, structure in out:
        started = time.perf_counter()
        if run.progress:
            print(f"fit: building the baseline {name} at {gguf_type}", flush=True)
        result, path = _build(run, recipe, name, gguf_type)
        contender = _measured_contender(run, name, kind, gguf_type, result, path, started)
        _predicted(run, contender, structure)
        contender.recipe = recipe
        yield contender, result, path


def _report(chosen, contenders, targets, library, measured, timings, started, calibration, heldout, threads, shape, uniform) -> dict:
    others = [c for c in contenders if c.meets and c is not chosen]
    comparisons = {}
    for kind in ("dense", "shortgpt", "liar-uniform", "candidate"):
        rivals = [c for c in others if c.kind == kind]
        if rivals:
            best = min(rivals, key=lambda c: c.mean_nll)
            comparisons[best.name] = compare(best.nll, chosen.nll, higher_is_better=False)
    notes = []
    latency = measured.latency
    if latency is not None and latency.bytes_share + latency.layers_share > 1.1:
        notes.append(
            f"the decode-time model's shares (bytes {latency.bytes_share:.2f}, layers {latency.layers_share:.2f}) add up to more "
            "than the whole: its probes were timed under a changing load; rerun on an idle machine with a new --library"
        )
    if chosen.kind == "dense":
        notes.append(
            f"quantizing alone wins here: the dense model at {chosen.gguf_type} meets {targets.describe()} "
            "with the best held-out perplexity"
        )
    elif not any(c.meets for c in contenders if c.kind == "dense"):
        notes.append("no dense quantized file meets the targets: only pruned files reach them")
    if uniform:
        notes.append(
            "this family's llama.cpp architecture reads one FFN width for all layers and holds no pruned heads: "
            "candidates drop blocks and narrow every kept FFN alike"
        )
    for c in contenders:
        if c.predicted_params is not None and c.predicted_params != c.params:
            notes.append(f"{c.name}: predicted {c.predicted_params:,} parameters, the model has {c.params:,}")
        if c.predicted_bytes is not None and c.predicted_bytes != c.bytes:
            error = (c.bytes - c.predicted_bytes) / c.bytes
            notes.append(f"{c.name}: predicted {c.predicted_bytes:,} bytes, the file has {c.bytes:,} ({error:+.2%})")
    return {
        "targets": asdict(targets),
        "targets_text": targets.describe(),
        "chosen": chosen.name,
        "contenders": [{**asdict(c), "perplexity": c.perplexity, "mean_nll": c.mean_nll} for c in contenders],
        "comparisons": comparisons,
        "notes": notes,
        "library": {
            "directory": str(library.directory),
            "seconds": library.seconds,
            "resumed_layers": library.resumed_layers,
            "channels": library.channels,
            "kv_groups": library.kv_groups,
            "uniform_widths": uniform,
        },
        "latency_model": measured.latency.to_dict() if measured.latency else None,
        "timings": {**timings, "total_s": time.perf_counter() - started},
        "calibration": calibration.summary() if hasattr(calibration, "summary") else None,
        "heldout": {
            "windows": int(heldout.input_ids.shape[0]),
            "seq_len": int(heldout.input_ids.shape[1]),
            "content": token_digest(heldout.input_ids),
        },
        "threads": threads,
        "shape": asdict(shape),
    }
