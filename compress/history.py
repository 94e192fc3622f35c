"""A persistent record of runs: SQLite (embedded, zero set-up) in WAL mode, so several
browser sessions and CLI processes can write at once.

Each run keeps its recipe, the before/after profiles, every step's report, the artifacts,
start/end time, device, software versions and, for a failed run, its error. The file is
``COMPRESSION_LAB_HISTORY`` or ``~/.cache/compression-lab/history.sqlite``.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from compress.errors import CompressError
from compress.paths import cache_dir

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,              -- running | done | failed | cancelled (read back: interrupted)
    source TEXT NOT NULL DEFAULT '',   -- cli | app | test
    recipe_json TEXT NOT NULL,
    before_json TEXT, after_json TEXT, steps_json TEXT, artifacts_json TEXT,
    device TEXT, versions_json TEXT, error TEXT,
    started REAL NOT NULL, ended REAL,
    pid INTEGER, host TEXT             -- the process that runs it (to tell a dead one)
)"""
# absent from files of earlier versions (added when such a file is opened)
COLUMNS_ADDED = (("pid", "INTEGER"), ("host", "TEXT"), ("data_json", "TEXT"), ("changed_json", "TEXT"))


class HistoryError(CompressError):
    """The history file cannot be opened or written."""


@dataclass
class Run:
    id: int
    name: str
    status: str
    source: str
    recipe: dict
    before: Optional[dict]
    after: Optional[dict]
    steps: Optional[list]
    artifacts: Optional[dict]
    device: Optional[str]
    versions: Optional[dict]
    error: Optional[str]
    started: float
    ended: Optional[float]
    data: Optional[dict] = None        # the images: source, n, seed, files and labels in evaluation order
    changed: Optional[list] = None     # images whose top-1 changed from the original (report.changed_images)

    def to_json(self) -> dict:
        return asdict(self)


def default_path() -> Path:
    env = os.environ.get("COMPRESSION_LAB_HISTORY")
    if env:
        return Path(env).expanduser()
    return cache_dir() / "history.sqlite"


class History:
    def __init__(self, path: Optional[str | os.PathLike] = None):
        self.path = Path(path).expanduser() if path else default_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._db() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(SCHEMA)
                have = {r[1] for r in db.execute("PRAGMA table_info(runs)")}
                for col, kind in COLUMNS_ADDED:
                    if col not in have:
                        db.execute(f"ALTER TABLE runs ADD COLUMN {col} {kind}")
        except (OSError, sqlite3.Error) as e:
            raise HistoryError(f"The run history cannot be written at {self.path} ({e}). Choose a "
                               "writable file with COMPRESSION_LAB_HISTORY or --history.") from None

    @contextmanager
    def _db(self):
        try:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as e:
            raise HistoryError(f"The run history at {self.path} cannot be opened ({e}).") from None
        try:
            db.execute("PRAGMA busy_timeout=30000")
            yield db
        finally:
            db.close()

    def _write(self, sql: str, args: tuple) -> int:
        try:
            with self._db() as db:
                cur = db.execute(sql, args)
                return cur.lastrowid
        except sqlite3.Error as e:
            raise HistoryError(f"The run history at {self.path} cannot be written ({e}).") from None

    def start(self, recipe: dict, name: str = "", source: str = "", device: str = "",
              versions: Optional[dict] = None) -> int:
        """Record a run that has begun; returns its id."""
        return self._write("INSERT INTO runs (name, status, source, recipe_json, device, versions_json, started, "
                           "pid, host) VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?)",
                           (name, source, json.dumps(recipe), device, json.dumps(versions or {}), time.time(),
                            os.getpid(), socket.gethostname()))

    def artifact_dir(self, run_id: int) -> Path:
        """The folder where run ``run_id`` keeps its model file (next to the history file)."""
        return self.path.parent / "artifacts" / f"run-{run_id}"

    def finish(self, run_id: int, before: dict, after: dict, steps: list, artifacts: dict,
               data: Optional[dict] = None, changed: Optional[list] = None, note: Optional[str] = None) -> None:
        """Mark a run done with its figures; ``note`` (kept in the ``error`` column, which a
        done run does not otherwise use) says what of it was not kept, e.g. its model file."""
        self._write("UPDATE runs SET status='done', before_json=?, after_json=?, steps_json=?, artifacts_json=?, "
                    "data_json=?, changed_json=?, error=?, ended=? WHERE id=?",
                    (json.dumps(before), json.dumps(after), json.dumps(steps), json.dumps(artifacts),
                     None if data is None else json.dumps(data), None if changed is None else json.dumps(changed),
                     note, time.time(), run_id))

    def fail(self, run_id: int, error: str, status: str = "failed") -> None:
        """Mark a run as ended without a result: ``failed``, or ``cancelled`` by its user."""
        if status not in ("failed", "cancelled"):
            raise ValueError(status)
        self._write("UPDATE runs SET status=?, error=?, ended=? WHERE id=?", (status, error, time.time(), run_id))

    def delete(self, run_id: int) -> bool:
        try:
            with self._db() as db:
                gone = db.execute("DELETE FROM runs WHERE id=?", (run_id,)).rowcount > 0
        except sqlite3.Error as e:
            raise HistoryError(f"The run history at {self.path} cannot be written ({e}).") from None
        if gone:
            shutil.rmtree(self.artifact_dir(run_id), ignore_errors=True)
        return gone

    def runs(self, status: Optional[str] = None) -> list[Run]:
        """Every run, newest first (or only those with ``status``)."""
        with self._db() as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT * FROM runs ORDER BY id DESC").fetchall()
        runs = [_run(r) for r in rows]
        return [r for r in runs if r.status == status] if status else runs

    def get(self, run_id: int) -> Optional[Run]:
        with self._db() as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        return _run(row) if row else None


def _alive(pid: Optional[int], host: Optional[str]) -> bool:
    """Whether the process that started a run may still be running it. A run started on
    another host (a shared history file) is given the benefit of the doubt; a row from a
    version that did not record its process is taken as interrupted."""
    if pid is None:
        return False
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run(r: sqlite3.Row) -> Run:
    load = lambda s: None if s is None else json.loads(s)   # noqa: E731
    status = r["status"]
    if status == "running" and not _alive(r["pid"], r["host"]):
        status = "interrupted"           # its process is gone: it will never finish
    return Run(r["id"], r["name"], status, r["source"], json.loads(r["recipe_json"]),
               load(r["before_json"]), load(r["after_json"]), load(r["steps_json"]),
               load(r["artifacts_json"]), r["device"], load(r["versions_json"]), r["error"],
               r["started"], r["ended"], load(r["data_json"]), load(r["changed_json"]))
