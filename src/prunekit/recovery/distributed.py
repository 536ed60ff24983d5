"""Under `accelerate launch` every process runs the same command; only the main one writes files."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def launch_state():
    """accelerate's view of this launch. On a machine without CUDA it must be told the processes are CPU ones,
    or it starts no process group (gloo) and every process would think it is the only, main one."""
    import torch
    from accelerate.state import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def is_main_process() -> bool:
    return launch_state().is_main_process


def on_main_process(write: Callable[[], T]) -> T | None:
    """Run `write` on the main process only, then let every process continue together."""
    state = launch_state()
    result = write() if state.is_main_process else None
    if state.num_processes > 1:
        state.wait_for_everyone()
    return result
