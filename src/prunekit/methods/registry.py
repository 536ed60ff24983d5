"""One registry of pruning methods: a name, a typed config and a run function each, registered once.

A method's run function takes (model, config, context), changes the model in place and returns the
JSON-able details of what it did (the stage's part of the saved plan). The context carries what a
run needs besides its own options: calibration windows, the dense teacher, recovery data and the
engine settings. `prunekit.prune` looks methods up here; so does the CLI.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunekit.data.windows import DEFAULT_CALIBRATION_WINDOWS, TokenWindows
from prunekit.errors import ParameterError, PrunekitError
from prunekit.fingerprints import data_file_digest, token_digest
from prunekit.options import field_default
from prunekit.recovery.checkpoints import Checkpointing
from prunekit.recovery.data import SELF_GENERATED, recovery_windows, self_generated_windows
from prunekit.recovery.window_stream import documents_of, is_streamed, parse_mix, streamed_windows


@dataclass
class StageContext:
    """What every stage may use besides its own config."""

    windows: TokenWindows | None = None  # calibration data
    tokenizer: Any = None  # for recovery data and self-generated text
    teacher_factory: Callable[[], Any] | None = None  # the dense model, made on first use
    recovery_data: Any = "self"  # a data SPEC, TokenWindows, or a function making them
    text_field: str = "text"
    heldout: TokenWindows | None = None  # perplexity logged by iterative methods
    device: Any = None
    offload: bool = False
    batch_size: int = 1
    progress: bool = True
    seed: int = 0
    windows_per_stage: bool = False  # each stage takes the first windows its method asks for (require_windows)
    checkpoints: Checkpointing | None = None  # the job's run directory: each training stage saves in its own part
    stage: int = 0  # the stage being run (1-based), naming its part of the run directory
    _teacher: Any = field(default=None, repr=False)

    @property
    def engine(self) -> dict:
        return {"device": self.device, "offload": self.offload, "batch_size": self.batch_size, "progress": self.progress}

    def teacher(self):
        """The unpruned model to distil from (made once, on first use)."""
        if self._teacher is None:
            if self.teacher_factory is None:
                raise PrunekitError("this stage distils from the dense model; pass teacher= (or run with inplace=False)")
            self._teacher = self.teacher_factory()
        return self._teacher

    def require_windows(self, method: str, count: int | None = None) -> TokenWindows:
        """The calibration windows of this stage: the first `count` (a recipe stage's own `windows`), else with
        `windows_per_stage` the first ones its method asks for, else all of them."""
        if self.windows is None:
            raise ParameterError("data", f"is missing: method '{method}' needs calibration windows (prunekit.load_windows)")
        if count is not None:
            return self.windows.first(count)
        wanted = method_spec(method).calibration_windows if method in method_names() else self.windows.num_windows
        return self.windows.first(wanted) if self.windows_per_stage else self.windows

    def stage_checkpoints(self) -> Checkpointing | None:
        """Where the current stage's training saves itself (None: the job has no run directory)."""
        if self.checkpoints is None:
            return None
        stage = self.checkpoints.inside(f"stage-{self.stage}")
        if stage.resume and not (stage.path.is_dir() and any(stage.path.iterdir())):  # a resumed job reached a stage it never started
            stage = dataclasses.replace(stage, resume=False)
        return stage

    def recovery_data_identity(self):
        """What the recovery data is, by content where it is local (a run that resumes must find it again):
        each source of a SPEC as its reader identifies it (shards by size and sampled bytes, a hub dataset by
        name), a single file by its own bytes, windows by their hash, None for a function."""
        data = self.recovery_data
        if isinstance(data, TokenWindows):
            return {"content": token_digest(data.input_ids)}
        if not isinstance(data, str):
            return None
        return [
            {"spec": source, "weight": weight, "identity": _source_identity(source, self.text_field)} for source, weight in parse_mix(data)
        ]

    def _streamed(self) -> bool:
        return isinstance(self.recovery_data, str) and self.recovery_data != SELF_GENERATED and is_streamed(self.recovery_data)

    def recovery_source(self, config, teacher=None):
        """What a recovery run of `config` trains on: a stream for shards, mixes, hub datasets and large
        files (read as training goes), otherwise windows held in memory."""
        if self._streamed():
            if self.tokenizer is None:
                raise ParameterError("tokenizer", "is missing: recovery data is made from text, so pass tokenizer=")
            data, field_name = self.recovery_data, self.text_field
            return streamed_windows(data, self.tokenizer, seq_len=config.seq_len, seed=config.seed, text_field=field_name)
        return self.recovery_windows(config, teacher)

    def recovery_windows(self, config, teacher=None) -> TokenWindows:
        """The windows a recovery run of `config` trains on, from `recovery_data`, held in memory (a stream
        is read for exactly the budget's windows)."""
        data = self.recovery_data
        if self._streamed():
            stream = self.recovery_source(config, teacher)
            count = -(-config.tokens // config.seq_len)
            return TokenWindows(stream.take(count), stream.description, count * config.seq_len)
        if isinstance(data, TokenWindows):
            return data
        if callable(data):
            return data()
        if self.tokenizer is None:
            raise ParameterError(
                "tokenizer", "is missing: recovery data is made from text, so pass tokenizer= (or recovery_data= as TokenWindows)"
            )
        if data == SELF_GENERATED:
            if teacher is None:
                raise ParameterError("recovery_data", "'self' samples text from the dense teacher; give one, or a data SPEC")
            return self_generated_windows(
                teacher,
                self.tokenizer,
                num_tokens=config.tokens,
                seq_len=config.seq_len,
                seed=config.seed,
                device=self.device,
                progress=self.progress,
            )
        return recovery_windows(
            data, self.tokenizer, num_tokens=config.tokens, seq_len=config.seq_len, seed=config.seed, text_field=self.text_field
        )


def _source_identity(source: str, text_field: str):
    if source in ("builtin", SELF_GENERATED):
        return source
    path = Path(source).expanduser()
    if path.is_file():  # also the formats read whole (.json, .txt), which are no shards
        return {"files": [str(path)], "content": [data_file_digest(path)]}
    return documents_of(source, text_field).identity()


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its config type, run function and how its result may be re-applied."""

    name: str
    config_cls: type
    run: Callable[[Any, Any, StageContext], dict]
    summary: str
    needs_data: bool = True
    # (model, details) -> None: repeats the recorded change without data; None where a rerun is needed
    reapply: Callable[[Any, dict], None] | None = None
    why_not_reapplicable: str = ""
    rerun_from_plan: bool = False  # a plan's stage may run again from its saved config on new data (deterministic methods)
    skipped_on_replay: bool = False  # re-applying a plan leaves this stage out (recovery: rerun it if wanted), and says so
    removes_blocks: bool = False  # details["removed_blocks"] are indices of the stage's input model
    # calibration windows the CLI loads when --windows is not given (LIAR's least squares needs more
    # tokens than a block score: see the README's Gemma-3 measurements)
    calibration_windows: int = DEFAULT_CALIBRATION_WINDOWS
    own_run_directory: bool = False  # its config has run_dir/resume of its own (IteRABRe keeps its iterations there)
    logs_heldout: bool = False  # measures the held-out windows during the run (IteRABRe: after every iteration)
    describe: Callable[[dict], str] | None = None  # details -> the line the command line prints for the stage
    label: Callable[[dict], str] | None = None  # details -> a short name for the pruned model in reports
    is_default: bool = False  # the method `prune` runs when none is named
    offered_as_method: bool = True  # a choice of `--method` (recovery has its own flags and command)
    command_help: str = ""  # given: the command line also offers the method as a command of its own, with this help


_METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, config_cls: type, run: Callable, *, summary: str, **options) -> MethodSpec:
    """Add a method; names are unique (a second registration under the same name is refused)."""
    if name in _METHODS:
        raise ValueError(f"method '{name}' is already registered")
    spec = MethodSpec(name, config_cls, run, summary, **options)
    _METHODS[name] = spec
    return spec


def method_names() -> list[str]:
    return list(_METHODS)


def default_method() -> str:
    """The method a prune runs when none is named (the one registered with is_default)."""
    return next(spec.name for spec in _METHODS.values() if spec.is_default)


def offered_methods() -> list[str]:
    """The names `--method` offers, in registration order."""
    return [spec.name for spec in _METHODS.values() if spec.offered_as_method]


def method_spec(name: str) -> MethodSpec:
    if name not in _METHODS:
        raise ParameterError("method", f"'{name}' is unknown; choose one of {', '.join(_METHODS)}")
    return _METHODS[name]


def spec_for_config(config) -> MethodSpec:
    for spec in _METHODS.values():
        if type(config) is spec.config_cls:
            return spec
    raise ParameterError("method", f"{type(config).__name__} is not a registered method config")


def config_from_options(name: str, options: dict, where: str = ""):
    """The config of method `name` from keyword options; unknown options are named in the error."""
    spec = method_spec(name)
    fields = {f.name: f for f in dataclasses.fields(spec.config_cls)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ParameterError(unknown[0], f"is not an option of {name}{where}; its options are {', '.join(fields)}")
    values = dict(options)
    for key, value in options.items():
        nested = _nested_config_type(fields[key])
        if nested is not None and isinstance(value, dict):
            values[key] = nested_config(nested, value, f"{name}.{key}{where}")
        elif isinstance(value, list) and isinstance(field_default(fields[key]), tuple):
            values[key] = tuple(value)
    config = spec.config_cls(**values)
    return config


def check_known_settings(config_cls: type, options: dict, where: str) -> None:
    """Refuse an option that `config_cls` does not have, naming the ones it has."""
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ParameterError(unknown[0], f"is not a setting of {where}; its settings are {', '.join(sorted(known))}")


def nested_config(config_cls: type, options: dict, where: str):
    check_known_settings(config_cls, options, where)
    return config_cls(**options)


def _nested_config_type(field_: dataclasses.Field) -> type | None:
    default = field_default(field_)
    return type(default) if dataclasses.is_dataclass(default) else getattr(field_, "metadata", {}).get("config")


def config_to_dict(config) -> dict:
    """A config as JSON-able options (tuples as lists), loadable again by config_from_options."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def default_calibration_windows(names: list[str], configs: list | None = None) -> int:
    """The calibration windows a run loads unless told: the most that any of its methods, or any stage's own
    `windows`, asks for."""
    known = method_names()
    asked = [method_spec(name).calibration_windows for name in names if name in known] or [DEFAULT_CALIBRATION_WINDOWS]
    return max(asked + stage_windows(configs))


def stage_windows(configs: list | None) -> list[int]:
    """The calibration windows that recipe stages ask for themselves."""
    return [c.windows for c in configs or [] if isinstance(getattr(c, "windows", None), int)]


def _told_by_method(stage: dict, attribute: str) -> str:
    """The method's own `describe` or `label` of a plan's stage, from its details; the method's name without one."""
    method = stage["method"]
    tell = getattr(_METHODS.get(method), attribute, None)
    return tell({"method": method, **(stage.get("details") or {})}) if tell is not None else method


def describe_stage(stage: dict) -> str:
    """One line saying what a plan's stage did."""
    return _told_by_method(stage, "describe")


def stage_label(stage: dict) -> str:
    """A short name for one stage of a pruned model in reports."""
    return _told_by_method(stage, "label")
