"""What survives a browser refresh: one Workspace per browser session, and its background job.

Streamlit forgets ``st.session_state`` when a tab reloads. So the session's truth (the
current :class:`compress.pipeline.Point`), the sidebar's settings and the one background
job live in a :class:`Workspace` kept in ``st.cache_resource`` (one registry per server
process), keyed by a session token that lives in the URL (``?s=…``). A reloaded tab
reads the token from its URL and reattaches: it shows the live progress and the Cancel
button, or the result once the job is done.

A :class:`Job` is a daemon thread that runs an engine function (in practice
``pipeline.run``) with ``on_progress`` and ``cancel``. The thread never touches Streamlit:
it appends events, stores its result and, when it finishes, makes the result the
workspace's current model, so a job nobody watches still lands in the history and in the
session. At most one job runs per workspace.
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import streamlit as st

from compress.errors import CompressError
from compress.progress import Cancelled, ProgressEvent

log = logging.getLogger(__name__)
TOKEN = "s"                                       # the URL's query parameter


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
    thread: Optional[threading.Thread] = None

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def last(self) -> Optional[ProgressEvent]:
        return self.events[-1] if self.events else None

    def on_progress(self, event: ProgressEvent) -> None:
        self.events.append(event)


@dataclass
class Workspace:
    """One browser session's state that must outlive a reload."""
    token: str
    current: Any = None                              # compress.pipeline.Point, or None
    job: Optional[Job] = None
    settings: dict = field(default_factory=dict)     # sidebar values, restored after a reload
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, name: str, work: Callable[[Callable, threading.Event], Any], key: str = "",
              on_done: Optional[Callable[[Any], None]] = None) -> Job:
        """Run ``work(on_progress, cancel)`` in a daemon thread; ``on_done(result)`` runs in
        that thread when it succeeds. Refuses a second job while one runs."""
        with self.lock:
            if self.job is not None and self.job.running:
                raise CompressError(f"A {self.job.name} job is already running in this session: wait for "
                                    "it or cancel it first.")
            job = Job(name, key)
            self.job = job

        def run():
            try:
                job.result = work(job.on_progress, job.cancel)
                if on_done is not None:
                    on_done(job.result)
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


@st.cache_resource
def _registry() -> dict[str, Workspace]:
    return {}


def workspace() -> Workspace:
    """This browser session's Workspace. The token is kept in session_state (page switches)
    and written back to the URL on every run (so a reload finds it)."""
    token = st.session_state.get("_token") or st.query_params.get(TOKEN)
    registry = _registry()
    if not token or not isinstance(token, str) or len(token) > 64:
        token = secrets.token_urlsafe(9)
    st.session_state["_token"] = token
    if st.query_params.get(TOKEN) != token:
        st.query_params[TOKEN] = token
    ws = registry.get(token)
    if ws is None:
        ws = registry[token] = Workspace(token)
    return ws


def start_job(ws: Workspace, name: str, work: Callable[[Callable, threading.Event], Any], key: str = "",
              on_done: Optional[Callable[[Any], None]] = None) -> None:
    """Start ``work`` as the session's background job and redraw the page (which then shows
    it live); a job that cannot start is a message, and the page stops there."""
    try:
        ws.start(name, work, key=key, on_done=on_done)
    except CompressError as e:
        st.error(str(e))
        st.stop()
    st.rerun()


def follow_job(ws: Workspace, draw: Callable[[Job], None], cancel_key: str, cancel_note: str = "",
               after: Optional[Callable[[Job], None]] = None) -> None:
    """Draw the running job once a second in a fragment: ``draw(job)`` (progress, captions),
    a Cancel button (``cancel_note`` shown once pressed), then ``after(job)`` (e.g. live
    curves). When the job ends the whole page reruns to show its result."""
    @st.fragment(run_every=1.0)
    def live():
        job = ws.job
        if job is None:
            return
        if not job.running:
            st.rerun()                               # redraw the whole page with the result
        draw(job)
        if st.button("Cancel", key=cancel_key):
            job.cancel.set()
            if cancel_note:
                st.warning(cancel_note)
        if after is not None:
            after(job)
    live()
