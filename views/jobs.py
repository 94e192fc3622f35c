"""Long work (training) in a background thread, so the page stays live while it runs.

A Streamlit script run cannot be interrupted cleanly by a second button, and a rerun
would lose a half-trained model. So the page starts a :class:`Job`: a thread that runs an
engine function with ``on_progress`` and ``cancel``. The job object lives in
``st.session_state``; a fragment re-reads it every second to draw progress and curves,
and the Cancel button sets the job's cancel flag, which the training loop checks every
step. The thread never touches Streamlit: it only appends events and stores its result.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from compress.errors import CompressError
from compress.progress import Cancelled, ProgressEvent

log = logging.getLogger(__name__)


@dataclass
class Job:
    name: str
    key: str = ""                                    # what it belongs to (the model's key)
    cancel: threading.Event = field(default_factory=threading.Event)
    events: list = field(default_factory=list)      # ProgressEvents, in order
    status: str = "running"                          # running | done | failed | cancelled
    result: Any = None
    error: Optional[str] = None
    started: float = field(default_factory=time.time)
    ended: Optional[float] = None
    consumed: bool = False                           # the page has taken the result
    thread: Optional[threading.Thread] = None

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def last(self) -> Optional[ProgressEvent]:
        return self.events[-1] if self.events else None

    def on_progress(self, event: ProgressEvent) -> None:
        self.events.append(event)


def start(name: str, work: Callable[[Callable, threading.Event], Any], key: str = "") -> Job:
    """Run ``work(on_progress, cancel)`` in a daemon thread; returns the job at once."""
    job = Job(name, key)

    def run():
        try:
            job.result = work(job.on_progress, job.cancel)
            job.status = "done"
        except Cancelled as e:
            job.status, job.error = "cancelled", str(e)
        except CompressError as e:
            job.status, job.error = "failed", str(e)
        except Exception as e:  # noqa: BLE001 - shown as a message; the traceback goes to the log
            log.exception("background job %s failed", name)
            job.status, job.error = "failed", f"Unexpected error ({type(e).__name__}): {e}"
        finally:
            job.ended = time.time()
    job.thread = threading.Thread(target=run, name=f"compression-lab-{name}", daemon=True)
    job.thread.start()
    return job
