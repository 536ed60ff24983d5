"""What a recovery run does: losses, trainable scope, optimiser and the token budget."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from prunekit.errors import ParameterError
from prunekit.options import check_types, option

SCOPES = ("blocks", "neighbours", "lora", "adapters", "full")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SHARDING = ("none", "fsdp")
DEFAULT_RECOVERY_TOKENS = 2_500_000

# The learning rate when none is given. Measured on SmolLM2-135M (benchmarks/equal_budget.py, README):
# full-weight recovery at 3e-4 beat 1e-4 at 50k tokens (two seeds, 0.08-0.11 nats per token) and at 200k
# (0.05, task means tied), and 1e-3 was past the best; LoRA (rank 16) at 4e-3 beat 1e-3 and 1e-2, and
# FlexiGPT's paper trains its low-rank adapters on Llama-2-7B at 4e-3. Full fine-tunes of 1B+ models
# at 3e-4 are unmeasured and risk diverging, so they keep the common 1e-4 (METHODS.md's reference).
SMALL_MODEL_PARAMETERS = 1_000_000_000
SMALL_MODEL_LEARNING_RATE = 3e-4
LARGE_MODEL_LEARNING_RATE = 1e-4
LOW_RANK_LEARNING_RATE = 4e-3


def default_learning_rate(scope: str, parameters: int) -> float:
    """The peak learning rate for `scope` on a model of `parameters` (the dense model's size)."""
    if scope in ("lora", "adapters"):
        return LOW_RANK_LEARNING_RATE
    return SMALL_MODEL_LEARNING_RATE if parameters < SMALL_MODEL_PARAMETERS else LARGE_MODEL_LEARNING_RATE


@dataclass
class RecoveryConfig:
    """Settings of one recovery run; every field is a CLI flag of `prunekit recover`.

    The budget is in tokens, not epochs: optimizer steps = tokens // (micro_batch_size * seq_len *
    grad_accumulation * processes), so runs with different batch shapes see the same amount of data.
    """

    tokens: int = option(
        DEFAULT_RECOVERY_TOKENS, "tokens to train on (default 2.5M); iterabre splits them over its iterations", flag="--recovery-tokens"
    )
    seq_len: int = option(512, "tokens per training window (default 512)", flag="--recovery-seq-len")
    micro_batch_size: int = option(1, "windows per forward pass")
    grad_accumulation: int = option(4, "micro-batches per optimizer step (default 4)")
    learning_rate: float | None = option(
        None,
        "peak AdamW learning rate, linear warm-up then cosine decay (default: 4e-3 for lora and adapters; for full "
        "weights 3e-4 below 1B parameters, 1e-4 from 1B up)",
        flag="--lr",
    )
    weight_decay: float = option(0.0, "AdamW weight decay")
    warmup_ratio: float = option(0.05, "share of steps spent warming up (default 0.05)")
    max_grad_norm: float = option(1.0, "gradient clipping norm")
    kd_weight: float = option(1.0, "weight of KL(teacher || student) on logits, times temperature^2")
    lm_weight: float = option(0.0, "weight of the next-token loss on the data")
    hidden_weight: float = option(0.0, "weight of the final-hidden-state MSE, relative to the teacher's mean square")
    temperature: float = option(1.0, "distillation temperature")
    # blocks: every decoder block; neighbours: given blocks; lora: peft LoRA; adapters: the shared
    # blocks' own LoRA pairs, bias deltas and output-norm scales (FlexiGPT); full: all weights
    scope: str = option("blocks", f"what trains: {', '.join(SCOPES)}")
    norm_scale_learning_rate: float | None = option(
        None,
        "peak learning rate of shared blocks' output-norm scales (flexigpt and extend: default 1e-1; unset: --lr)",
        flag="--norm-scale-lr",
    )
    lora_rank: int = option(8, "scope lora: adapter rank (merged back before export)")
    lora_alpha: float = option(16.0, "scope lora: adapter alpha")
    precision: str = option("auto", f"{', '.join(PRECISIONS)} (auto: bf16 autocast on CUDA with bf16 support, fp32 elsewhere)")
    gradient_checkpointing: bool = option(False, "trade compute for activation memory")
    # On a GPU, regroup each step's micro_batch_size x grad_accumulation windows into the largest
    # micro-batches that fit (activation checkpointing only when one window does not fit without it).
    fit_micro_batch: bool = option(
        True,
        "on a GPU, regroup each step's windows into the largest micro-batches that fit",
        flag="--fixed-micro-batch",
        flag_help="keep --micro-batch-size as given instead of regrouping each step's windows into the largest micro-batches "
        "that fit the GPU (the default)",
    )
    sharding: str = option(
        "none",
        "none, or fsdp: split student weights, gradients, optimizer state and the teacher over the processes of a "
        "multi-process launch (torch FSDP2; also chosen by accelerate launch with an FSDP config)",
    )
    # Sharding the teacher saves a whole copy per process, the memory sharding is for; it cost 16% of the speed on two
    # CPU processes (gloo) in benchmarks/sharding.py (docs/decisions.md).
    shard_teacher: bool = option(True, "with sharding fsdp, shard the teacher too (else each process holds all of it)", internal=True)
    seed: int = option(0, "seed for the data order")
    # This run as a stretch of a longer warm-up + cosine schedule (IteRABRe's continuous schedule):
    # its steps are steps schedule_start.. of schedule_steps. None: the schedule is this run's own.
    schedule_start: int = option(0, "first step of this run within a longer schedule", internal=True)
    schedule_steps: int | None = option(None, "length of that longer schedule in steps", internal=True)

    def check(self, has_teacher: bool = True) -> None:
        """One-line errors for settings that cannot train."""
        check_types(self)
        if self.tokens < 1:
            raise ParameterError("tokens", f"{self.tokens} must be at least 1")
        for name in ("seq_len", "micro_batch_size", "grad_accumulation", "lora_rank"):
            if getattr(self, name) < 1:
                raise ParameterError(name, f"{getattr(self, name)} must be at least 1")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ParameterError("learning_rate", f"{self.learning_rate} must be positive")
        if self.norm_scale_learning_rate is not None and not self.norm_scale_learning_rate > 0:
            raise ParameterError("norm_scale_learning_rate", f"{self.norm_scale_learning_rate} must be positive")
        if not 0 <= self.warmup_ratio < 1:
            raise ParameterError("warmup_ratio", f"{self.warmup_ratio} must be in [0, 1)")
        if self.temperature <= 0:
            raise ParameterError("temperature", f"{self.temperature} must be positive")
        if self.scope not in SCOPES:
            raise ParameterError("scope", f"'{self.scope}' is unknown; use one of {', '.join(SCOPES)}")
        if self.sharding not in SHARDING:
            raise ParameterError("sharding", f"'{self.sharding}' is unknown; use one of {', '.join(SHARDING)}")
        if self.precision not in PRECISIONS:
            raise ParameterError("precision", f"'{self.precision}' is unknown; use one of {', '.join(PRECISIONS)}")
        weights = (self.kd_weight, self.lm_weight, self.hidden_weight)
        if min(weights) < 0 or sum(weights) == 0:
            raise ParameterError("kd_weight", "lm_weight and hidden_weight (the loss weights) must be non-negative and not all zero")
        if not has_teacher and (self.kd_weight or self.hidden_weight):
            raise ParameterError(
                "kd_weight", "(or hidden_weight) distils, which needs a teacher; without one use kd_weight 0 and lm_weight 1"
            )

    def resolved(self, parameters: int) -> RecoveryConfig:
        """This config with the default learning rate filled in for a dense model of `parameters`."""
        if self.learning_rate is not None:
            return self
        return replace(self, learning_rate=default_learning_rate(self.scope, parameters))

    def tokens_per_step(self, processes: int = 1) -> int:
        return self.micro_batch_size * self.seq_len * self.grad_accumulation * processes

    def steps(self, processes: int = 1) -> int:
        return max(1, self.tokens // self.tokens_per_step(processes))

    def to_dict(self) -> dict:
        return asdict(self)
