"""What a recovery run does: losses, trainable scope, optimiser and the token budget."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from prunekit.errors import PrunekitError

SCOPES = ("blocks", "neighbours", "lora", "adapters", "full")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEFAULT_RECOVERY_TOKENS = 2_500_000


@dataclass
class RecoveryConfig:
    """Settings of one recovery run; every field is a CLI flag of `prunekit recover`.

    The budget is in tokens, not epochs: optimizer steps = tokens // (micro_batch_size * seq_len *
    grad_accumulation * processes), so runs with different batch shapes see the same amount of data.
    """

    tokens: int = DEFAULT_RECOVERY_TOKENS
    seq_len: int = 512
    micro_batch_size: int = 1
    grad_accumulation: int = 4
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    max_grad_norm: float = 1.0
    kd_weight: float = 1.0      # KL(teacher || student) on logits, times temperature^2
    lm_weight: float = 0.0      # next-token cross-entropy on the data
    hidden_weight: float = 0.0  # MSE between final hidden states, relative to the teacher's mean square
    temperature: float = 1.0
    # blocks: every decoder block; neighbours: given blocks; lora: peft LoRA; adapters: the shared
    # blocks' own LoRA pairs, bias deltas and output-norm scales (FlexiGPT); full: all weights
    scope: str = "blocks"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    precision: str = "auto"     # auto: bf16 autocast on CUDA with bf16 support, fp32 elsewhere
    gradient_checkpointing: bool = False
    # On a GPU, regroup each step's micro_batch_size x grad_accumulation windows into the largest
    # micro-batches that fit (activation checkpointing only when one window does not fit without it).
    fit_micro_batch: bool = True
    seed: int = 0

    def check(self, has_teacher: bool) -> None:
        """One-line errors for settings that cannot train."""
        if self.tokens < 1:
            raise PrunekitError(f"--recovery-tokens {self.tokens} must be at least 1")
        for name in ("seq_len", "micro_batch_size", "grad_accumulation", "lora_rank"):
            if getattr(self, name) < 1:
                raise PrunekitError(f"recovery {name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")
        if not self.learning_rate > 0:
            raise PrunekitError(f"--lr {self.learning_rate} must be positive")
        if not 0 <= self.warmup_ratio < 1:
            raise PrunekitError(f"--warmup-ratio {self.warmup_ratio} must be in [0, 1)")
        if self.temperature <= 0:
            raise PrunekitError(f"--temperature {self.temperature} must be positive")
        if self.scope not in SCOPES:
            raise PrunekitError(f"unknown recovery scope '{self.scope}'; use one of {', '.join(SCOPES)}")
        if self.precision not in PRECISIONS:
            raise PrunekitError(f"unknown precision '{self.precision}'; use one of {', '.join(PRECISIONS)}")
        weights = (self.kd_weight, self.lm_weight, self.hidden_weight)
        if min(weights) < 0 or sum(weights) == 0:
            raise PrunekitError("loss weights must be non-negative and not all zero (--kd-weight, --lm-weight, --hidden-weight)")
        if not has_teacher and (self.kd_weight or self.hidden_weight):
            raise PrunekitError("distillation (--kd-weight/--hidden-weight) needs a --teacher; without one use --kd-weight 0 --lm-weight 1")

    def tokens_per_step(self, processes: int = 1) -> int:
        return self.micro_batch_size * self.seq_len * self.grad_accumulation * processes

    def steps(self, processes: int = 1) -> int:
        return max(1, self.tokens // self.tokens_per_step(processes))

    def to_dict(self) -> dict:
        return asdict(self)
