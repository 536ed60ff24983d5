"""The flag tables the commands share, and the parameter -> flag spelling of messages (FLAGS).

Method and recovery flags are generated from the configs' fields (prunekit.options), so the two cannot drift."""

from __future__ import annotations

from prunekit.data.windows import DEFAULT_CALIBRATION_WINDOWS
from prunekit.evaluation.suite import DEFAULT_PERPLEXITY_WINDOWS
from prunekit.methods import RecoveryConfig, default_method, method_spec, offered_methods
from prunekit.options import add_config_flags, flag_names

EVALUATION_FIELDS = (
    "ppl seq_len windows tasks data_dir limit task_batch_size flores languages flores_windows speed batch_size offload text_field".split()
)


RECOVERY = "recovery."  # namespace of the recovery flags' destinations (--recovery-seq-len is not --seq-len)


CONFIGS = [method_spec(name).config_cls for name in offered_methods()]


FLAGS = {
    **flag_names(*CONFIGS, RecoveryConfig),
    "data": "--data",
    "window_seq_len": "--seq-len",  # calibration and evaluation windows (the recovery config's seq_len is --recovery-seq-len)
    "eval_seq_len": "--eval-seq-len",
    "eval_limit": "--eval-limit",
    "windows": "--windows",
    "method": "--method",
    "recipe": "--recipe",
    "limit": "--limit",
    "offload": "--offload",
    "overwrite_run": "--overwrite",
    "overwrite": "--overwrite",
    "out": "--out",
    "device": "--device",
    "dtype": "--dtype",
    "text_field": "--text-field",
    "data_dir": "--data-dir",
    "ppl": "--ppl",
    "tasks": "--tasks",
    "flores": "--flores",
    "speed": "--speed",
    "output_norm": "--output-norm",
    "run_dir": "--run-dir",
}


MODEL_OPTIONS = [
    ("--model", {"required": True, "help": "hub id, local directory, .gguf file, or the alias smollm2-135m"}),
    ("--device", {"default": "auto", "help": "cpu, cuda, cuda:N or auto (default: cuda if available)"}),
    ("--dtype", {"default": "auto", "help": "auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16, float16"}),
    ("--trust-remote-code", {"action": "store_true", "help": "allow custom model code from the hub (off by default)"}),
    ("--json", {"action": "store_true", "help": "print machine-readable JSON on stdout"}),
    ("--quiet", {"action": "store_true", "help": "no progress bars"}),
    ("--text-field", {"default": "text", "help": "the text field of .jsonl/.json records and hub rows (default text)"}),
    ("--seed", {"type": int, "default": 0, "help": "seed for calibration offsets, recovery data and random choices"}),
    ("--batch-size", {"type": int, "default": 1, "help": "windows per forward batch"}),
    ("--offload", {"action": "store_true", "help": "keep only the current block on the device (large models)"}),
]


def _window_defaults() -> str:
    """'default 16; 64 for liar': the calibration windows each method loads when none are asked for."""
    specs = map(method_spec, offered_methods())
    own = [f"{spec.calibration_windows} for {spec.name}" for spec in specs if spec.calibration_windows != DEFAULT_CALIBRATION_WINDOWS]
    return "; ".join([f"default {DEFAULT_CALIBRATION_WINDOWS}", *own])


def _heldout_logging() -> str:
    logging_methods = [name for name in offered_methods() if method_spec(name).logs_heldout]
    return f" ({', '.join(logging_methods)}: also during the run)" if logging_methods else ""


CALIBRATION_OPTIONS = [
    (
        "--data",
        {
            "help": "calibration data: builtin, wikitext2, c4, ptb, a hub id or a .txt/.raw/.jsonl/.json file (default builtin; "
            "with --plan, the data the plan recorded)"
        },
    ),
    ("--windows", {"type": int, "help": f"number of calibration windows ({_window_defaults()})"}),
    ("--seq-len", {"type": int, "default": 512, "help": "tokens per calibration window (default 512)"}),
]


OUTPUT_OPTIONS = [("--out", {"required": True, "help": "output directory"}), ("--overwrite", {"action": "store_true"})]


HELDOUT_OPTIONS = [
    ("--heldout-data", {"default": "builtin", "help": f"perplexity data measured before and after{_heldout_logging()}"}),
    ("--heldout-windows", {"type": int, "default": 4, "help": "held-out windows (0 = none; default 4)"}),
]


PRUNE_OPTIONS = [
    ("--method", {"help": f"one of {', '.join(offered_methods())} (default {default_method()})"}),
    ("--recipe", {"help": "a .yaml/.json list of stages, e.g. [{method: shortgpt, remove: 4}, {recover: {tokens: 200000}}]"}),
    ("--plan", {"help": "re-apply a prunekit_plan.json (file or checkpoint directory); data-driven stages rerun from their settings"}),
    ("--compare", {"action": "store_true", "help": "evaluate before and after; write DIR/report/"}),
    ("--eval-data", {"default": "builtin", "help": "perplexity data for --compare (default: builtin evaluation half)"}),
    (
        "--eval-windows",
        {
            "type": int,
            "default": DEFAULT_PERPLEXITY_WINDOWS,
            "help": f"perplexity windows for --compare (default {DEFAULT_PERPLEXITY_WINDOWS})",
        },
    ),
    ("--eval-seq-len", {"type": int, "default": 512}),
    ("--eval-tasks", {"help": "comma-separated lm-eval tasks for --compare"}),
    ("--eval-data-dir", {"help": "read --eval-tasks from local files (layout of prunekit's shared data)"}),
    ("--eval-limit", {"type": float, "help": "items per task for --compare"}),
    ("--gguf", {"help": "also write the pruned model as this GGUF file, for llama.cpp (see prunekit export)"}),
    ("--gguf-type", {"default": "f16", "help": "GGUF encoding for --gguf (default f16; see prunekit export --help)"}),
    ("--vllm", {"help": "also write the pruned model for vLLM in this directory (DeciLM for per-layer widths; see prunekit export)"}),
]


EVAL_OPTIONS = [
    ("--ppl", {"nargs": "+", "help": "perplexity data: builtin, wikitext2, c4, ptb or local files (default builtin)"}),
    ("--seq-len", {"type": int, "default": 512, "help": "window length (512 or 2048 are common)"}),
    (
        "--windows",
        {
            "type": int,
            "default": DEFAULT_PERPLEXITY_WINDOWS,
            "help": f"perplexity over the first N windows (default {DEFAULT_PERPLEXITY_WINDOWS}, as prune --compare; fewer if the data "
            "has fewer)",
        },
    ),
    ("--tasks", {"help": "comma-separated lm-eval task names, e.g. piqa,arc_easy,hellaswag"}),
    ("--data-dir", {"help": "read the tasks from local files laid out as in prunekit's shared data"}),
    ("--limit", {"type": float, "help": "items per task (a fraction if < 1), for quick runs"}),
    ("--task-batch-size", {"type": int, "default": 8}),
    ("--flores", {"help": "FLORES-200 folder for per-language perplexity"}),
    ("--languages", {"help": "comma-separated FLORES codes (default: all found)"}),
    ("--flores-windows", {"type": int, "help": "windows per language (default: all)"}),
    ("--speed", {"action": "store_true", "help": "prefill/decode tokens/s, peak memory, size"}),
    ("--label", {"help": "name of this model in reports (default: --model)"}),
    ("--out", {"help": "write the results JSON here (for prunekit report)"}),
    ("--overwrite", {"action": "store_true"}),
]


def add_tables(parser, *tables) -> None:
    """Add each table's flags; a flag with a default that its help does not state gets it appended."""
    for table in tables:
        for flag, options in table:
            default, text = options.get("default"), options.get("help", "")
            if default is not None and default is not False and "default" not in text and options.get("action") != "store_true":
                options = {**options, "help": f"{text} (default {default})".lstrip()}
            parser.add_argument(flag, **options)


def add_recovery_flags(parser, run_flags: bool = False) -> None:
    group = parser.add_argument_group("recovery (distillation from the dense model; flags left out keep the method's defaults)")
    group.add_argument(
        "--recovery-data",
        default="self",
        help="self (text sampled from the teacher), builtin, a file, a directory or glob of shards (.txt, .jsonl, .jsonl.gz, "
        ".parquet; streamed), a hub dataset (streamed), or a weighted mix such as 'c4/*.jsonl:0.7,code.jsonl:0.3'",
    )
    add_config_flags(group, RecoveryConfig, {"seed"}, RECOVERY)
    if run_flags:
        group.add_argument("--run-dir", help="where training checkpoints go (default: OUT.run, removed when the run finishes)")
        group.add_argument("--resume", action="store_true", help="continue the interrupted run in --run-dir from its last checkpoint")
    group.add_argument("--save-every", type=int, help="tokens between training checkpoints (default: about every ten minutes of training)")


RUN_OPTIONS = ("run_dir", "resume", "overwrite_run")  # a config's own where its method keeps its own run directory (IteRABRe)
