"""One recovery run of the tiny model, launched by tests/test_recovery_sharding.py under torchrun (or alone).

argv: OUT SCOPE SHARDING GRAD_ACCUMULATION [RUN_DIR [stop-at-step|resume]]. The main process writes the loss log,
the memory record and the trained student (safetensors) to OUT."""

import copy
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from prunekit.data.windows import TokenWindows  # noqa: E402
from prunekit.models.surgery import remove_blocks  # noqa: E402
from prunekit.recovery import RecoveryConfig, recover  # noqa: E402
from prunekit.recovery.checkpoints import Checkpointing, RecoveryInterrupted  # noqa: E402

from conftest import VOCAB, tiny_model  # noqa: E402


class StopAt:
    """Windows that stop the run (as SIGTERM would) when step `at` draws its data."""

    def __init__(self, windows, at):
        from prunekit.recovery.window_stream import WindowOrder

        self.inner, self.at, self.calls = WindowOrder(windows, 0), at, 0

    def take(self, count):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), 15)
        return self.inner.take(count)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def main(out: str, scope: str, sharding: str, accumulation: int, run_dir: str | None = None, mode: str | None = None) -> None:
    torch.use_deterministic_algorithms(True)
    teacher = tiny_model("llama")
    student = copy.deepcopy(teacher)
    remove_blocks(student, [1])
    ids = torch.randint(3, VOCAB, (64, 16), generator=torch.Generator().manual_seed(0))
    windows = TokenWindows(ids, "random", ids.numel())
    config = RecoveryConfig(
        tokens=16 * 2 * 10,
        seq_len=16,
        micro_batch_size=1,
        grad_accumulation=accumulation,
        learning_rate=2e-3,
        scope=scope,
        sharding=sharding,
        precision="fp32",
        lm_weight=0.5,
    )
    checkpoints = None
    if run_dir:
        checkpoints = Checkpointing(run_dir, save_every=16 * 2 * 3, resume=mode == "resume")
    data = StopAt(windows, int(mode)) if mode and mode.isdigit() else windows
    try:
        result = recover(student, data, config, teacher=teacher, progress=False, checkpoints=checkpoints)
    except RecoveryInterrupted:
        sys.exit(143)
    if int(os.environ.get("RANK", "0")) == 0:
        from safetensors.torch import save_file

        Path(out).mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in student.state_dict().items() if k != "lm_head.weight"}, f"{out}/student.safetensors")
        teacher_unchanged = all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), tiny_model("llama").state_dict().values()))
        record = {"history": result.history, "memory": result.memory, "teacher_unchanged": teacher_unchanged, "steps": result.steps}
        Path(out, "result.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), *sys.argv[5:])
