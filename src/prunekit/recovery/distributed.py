"""Under `accelerate launch` every process runs the same command; only the main one writes files."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def _state():
    from accelerate.state import PartialState

    return PartialState()


def is_main_process() -> bool:
    return _state().is_main_process


def on_main_process(write: Callable[[], T]) -> T | None:
    """Run `write` on the main process only, then let every process continue together."""
    state = _state()
    result = write() if state.is_main_process else None
    if state.num_processes > 1:
        state.wait_for_everyone()
    return result
