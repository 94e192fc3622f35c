"""One callback type for long work: ``on_progress(event)``.

Pages turn events into progress bars and live charts; the CLI into log lines.
Cancellation is a ``threading.Event`` (or anything with ``is_set()``) that long loops
check once per step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol


@dataclass(frozen=True)
class ProgressEvent:
    stage: str                      # e.g. "latency", "accuracy", "train"
    fraction: float                 # 0..1 within the stage
    message: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


OnProgress = Callable[[ProgressEvent], None]


class Cancel(Protocol):
    def is_set(self) -> bool: ...


def emit(on_progress: Optional[OnProgress], stage: str, fraction: float,
         message: str = "", **metrics: Any) -> None:
    """Send an event if there is a listener; progress reporting is always optional."""
    if on_progress is not None:
        on_progress(ProgressEvent(stage, min(max(fraction, 0.0), 1.0), message, metrics))


class Cancelled(Exception):
    """Raised inside long work when the caller's cancel flag is set."""
