"""A persistent record of runs: SQLite (embedded, zero set-up) in WAL mode, so several
browser sessions and CLI processes can write at once.

Each run keeps its recipe, the before/after profiles, every step's report, the artifacts,
start/end time, device, software versions and, for a failed run, its error. The file is
``COMPRESSION_LAB_HISTORY`` or ``~/.cache/compression-lab/history.sqlite``.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from compress.errors import CompressError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,              -- running | done | failed
    source TEXT NOT NULL DEFAULT '',   -- cli | app | test
    recipe_json TEXT NOT NULL,
    before_json TEXT, after_json TEXT, steps_json TEXT, artifacts_json TEXT,
    device TEXT, versions_json TEXT, error TEXT,
    started REAL NOT NULL, ended REAL
)"""


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

    def to_json(self) -> dict:
        return asdict(self)


def default_path() -> Path:
    env = os.environ.get("COMPRESSION_LAB_HISTORY")
    if env:
        return Path(env).expanduser()
    from compress.data import cache_dir
    return cache_dir() / "history.sqlite"


class History:
    def __init__(self, path: Optional[str | os.PathLike] = None):
        self.path = Path(path).expanduser() if path else default_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._db() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(SCHEMA)
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
        return self._write("INSERT INTO runs (name, status, source, recipe_json, device, versions_json, started) "
                           "VALUES (?, 'running', ?, ?, ?, ?, ?)",
                           (name, source, json.dumps(recipe), device, json.dumps(versions or {}), time.time()))

    def finish(self, run_id: int, before: dict, after: dict, steps: list, artifacts: dict) -> None:
        self._write("UPDATE runs SET status='done', before_json=?, after_json=?, steps_json=?, artifacts_json=?, "
                    "ended=? WHERE id=?",
                    (json.dumps(before), json.dumps(after), json.dumps(steps), json.dumps(artifacts),
                     time.time(), run_id))

    def fail(self, run_id: int, error: str) -> None:
        self._write("UPDATE runs SET status='failed', error=?, ended=? WHERE id=?", (error, time.time(), run_id))

    def delete(self, run_id: int) -> bool:
        try:
            with self._db() as db:
                return db.execute("DELETE FROM runs WHERE id=?", (run_id,)).rowcount > 0
        except sqlite3.Error as e:
            raise HistoryError(f"The run history at {self.path} cannot be written ({e}).") from None

    def runs(self, status: Optional[str] = None) -> list[Run]:
        """Every run, newest first (or only those with ``status``)."""
        sql = "SELECT * FROM runs" + (" WHERE status=?" if status else "") + " ORDER BY id DESC"
        with self._db() as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(sql, (status,) if status else ()).fetchall()
        return [_run(r) for r in rows]

    def get(self, run_id: int) -> Optional[Run]:
        with self._db() as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        return _run(row) if row else None


def _run(r: sqlite3.Row) -> Run:
    load = lambda s: None if s is None else json.loads(s)   # noqa: E731
    return Run(r["id"], r["name"], r["status"], r["source"], json.loads(r["recipe_json"]),
               load(r["before_json"]), load(r["after_json"]), load(r["steps_json"]),
               load(r["artifacts_json"]), r["device"], load(r["versions_json"]), r["error"],
               r["started"], r["ended"])
