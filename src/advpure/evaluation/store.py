"""The record store: every per-image outcome of a run, in ``records.sqlite`` in the run
directory, written as it is produced (one transaction per shard, so a shard is either wholly
recorded or not at all). A run started again with the same config resumes its run: what is
recorded is skipped (``find_run``, ``recorded``); a changed config is a new run in the same
file. An outcome can be written once only (the primary key), so a resumed run that recomputed a
recorded sample would fail loudly instead of counting it twice. ``RunLock`` keeps a second
process from writing into a run directory that is in use.

Schema (``SCHEMA`` below is the source):

``runs`` — one row per run written into the file:
    run_id TEXT PRIMARY KEY     a random hex id of this run
    config_hash TEXT            sha256 of the canonical JSON of the config (first 16 hex digits)
    config TEXT                 the config as JSON (``EvalConfig.model_dump_json()``)
    created TEXT                UTC time, ISO 8601
    advpure_version TEXT

``outcomes`` — one row per (run, seed, attack, image):
    run_id, config_hash         as above
    seed INTEGER                the evaluation seed
    attack TEXT                 "clean", or the attack's key (its settings' ``key()``)
    sample_index INTEGER        the image's index in the dataset split
    label INTEGER               its true label
    predictions TEXT            JSON list of the labels predicted in the R purification draws
    single_draw REAL            fraction of the draws that are correct
    vote REAL                   the vote's chance of the true label, ties broken at random: 1
                                when it has strictly more votes than any other, 1/k when it
                                ties with k − 1 others (stores before: ties as 0)
    seconds REAL                wall time of the image's batch for this attack, per image
    x_adv BLOB                  the adversarial image as float32 bytes (C·H·W), or NULL
    attack_broken INTEGER       1 when some draw of some iterate that the attack scored was
                                misclassified (DiffHammer's N-evaluation rule), 0 when none
                                was, NULL for clean rows and attacks that keep no such log;
                                added to stores written before it (``ALTER TABLE``)
"""
from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import os
import sqlite3
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .stats import all_draws_correct, single_draw_correct, vote_correct

STORE_NAME = "records.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, config_hash TEXT NOT NULL, config TEXT NOT NULL,
    created TEXT NOT NULL, advpure_version TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outcomes (
    run_id TEXT NOT NULL, config_hash TEXT NOT NULL, seed INTEGER NOT NULL,
    attack TEXT NOT NULL, sample_index INTEGER NOT NULL, label INTEGER NOT NULL,
    predictions TEXT NOT NULL, single_draw REAL NOT NULL, vote REAL NOT NULL,
    seconds REAL NOT NULL, x_adv BLOB, attack_broken INTEGER,
    PRIMARY KEY (run_id, seed, attack, sample_index));
"""
COLUMNS = ("run_id, config_hash, seed, attack, sample_index, label, predictions, single_draw, "
           "vote, seconds, x_adv, attack_broken")


def config_hash(config_json: str) -> str:
    """sha256 of the canonical (sorted-key) JSON of a config, 16 hex digits."""
    canonical = json.dumps(json.loads(config_json), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Outcome:
    """One image under one attack (or clean) in one seed."""

    seed: int
    attack: str
    sample_index: int
    label: int
    predictions: tuple[int, ...]
    seconds: float
    x_adv: torch.Tensor | None = None
    attack_broken: bool | None = None      # a draw of an iterate the attack scored erred

    @property
    def single_draw(self) -> float:
        return single_draw_correct(self.predictions, self.label)

    @property
    def vote(self) -> float:
        return vote_correct(self.predictions, self.label)

    @property
    def all_draws(self) -> bool:
        return all_draws_correct(self.predictions, self.label)

    @property
    def any_iterate(self) -> bool:
        """DiffHammer's rule: every fresh draw right and no draw the attack scored on its way
        wrong (all draws where the attack keeps no log)."""
        return self.all_draws and not self.attack_broken


class RecordStore:
    """A run's SQLite file: ``begin_run`` once, ``add`` batches of outcomes, read them back."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.connection = sqlite3.connect(self.path)
        self.connection.executescript(SCHEMA)
        columns = {row[1] for row in self.connection.execute("PRAGMA table_info(outcomes)")}
        if "attack_broken" not in columns:                   # a store of an earlier version
            with self.connection:
                self.connection.execute("ALTER TABLE outcomes ADD COLUMN attack_broken INTEGER")

    def begin_run(self, config_json: str) -> str:
        """Register a run of ``config_json``; returns its run id."""
        from .. import __version__

        run_id = uuid.uuid4().hex[:16]
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        with self.connection:
            self.connection.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?)",
                                    (run_id, config_hash(config_json), config_json, created,
                                     __version__))
        return run_id

    def add(self, run_id: str, outcomes: Iterable[Outcome]) -> None:
        """Write a batch of outcomes in one transaction."""
        digest = self.run(run_id)["config_hash"]
        rows = [(run_id, digest, o.seed, o.attack, o.sample_index, o.label,
                 json.dumps(list(o.predictions)), o.single_draw, o.vote, o.seconds,
                 None if o.x_adv is None else
                 o.x_adv.detach().cpu().numpy().astype(np.float32).tobytes(),
                 None if o.attack_broken is None else int(o.attack_broken))
                for o in outcomes]
        with self.connection:
            self.connection.executemany(
                f"INSERT INTO outcomes ({COLUMNS}) VALUES ({', '.join('?' * 12)})", rows)

    def run(self, run_id: str) -> dict:
        row = self.connection.execute(
            "SELECT run_id, config_hash, config, created, advpure_version FROM runs "
            "WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(f"record store {self.path}: no run {run_id!r}")
        return dict(zip(("run_id", "config_hash", "config", "created", "advpure_version"), row))

    def runs(self) -> list[dict]:
        """Every run in the file, oldest first."""
        ids = [r[0] for r in self.connection.execute("SELECT run_id FROM runs ORDER BY rowid")]
        return [self.run(i) for i in ids]

    def find_run(self, config_json: str) -> str | None:
        """The latest run of the very same config (by hash), or None."""
        digest = config_hash(config_json)
        matches = [r["run_id"] for r in self.runs() if r["config_hash"] == digest]
        return matches[-1] if matches else None

    def recorded(self, run_id: str) -> set[tuple[int, str, int]]:
        """The (seed, attack, sample index) of every outcome of ``run_id``."""
        return set(self.connection.execute(
            "SELECT seed, attack, sample_index FROM outcomes WHERE run_id = ?", (run_id,)))

    def outcomes(self, run_id: str) -> list[Outcome]:
        """Every outcome of ``run_id`` in the order written (images not loaded)."""
        rows = self.connection.execute(
            "SELECT seed, attack, sample_index, label, predictions, seconds, attack_broken "
            "FROM outcomes WHERE run_id = ? ORDER BY rowid", (run_id,))
        return [Outcome(seed, attack, index, label, tuple(json.loads(preds)), seconds,
                        attack_broken=None if broken is None else bool(broken))
                for seed, attack, index, label, preds, seconds, broken in rows]

    def disagreements(self, run_id: str) -> list[str]:
        """The rows of ``run_id`` whose stored single-draw or vote column is not what their
        stored predictions give (a store edited after it was written), described."""
        rows = self.connection.execute(
            "SELECT rowid, seed, attack, sample_index, label, predictions, single_draw, vote "
            "FROM outcomes WHERE run_id = ? ORDER BY rowid", (run_id,))
        found = []
        for rowid, seed, attack, index, label, preds, single, vote in rows:
            predictions = tuple(json.loads(preds))
            expect_single = single_draw_correct(predictions, label)
            expect_vote = vote_correct(predictions, label)
            strict = float(expect_vote == 1.0)       # stores before the tie rule: ties as wrong
            if abs(single - expect_single) > 1e-9 or min(abs(vote - expect_vote),
                                                         abs(vote - strict)) > 1e-9:
                found.append(f"row {rowid} (seed {seed}, {attack}, image {index}): stored "
                             f"single_draw {single:g} and vote {vote:g}, its predictions "
                             f"{list(predictions)} of label {label} give {expect_single:g} and "
                             f"{expect_vote:g}")
        return found

    def adversarial(self, run_id: str, seed: int, attack: str, shape: tuple[int, ...]
                    ) -> dict[int, torch.Tensor]:
        """The stored adversarial images of one (seed, attack): sample index -> C×H×W tensor."""
        rows = self.connection.execute(
            "SELECT sample_index, x_adv FROM outcomes WHERE run_id = ? AND seed = ? AND "
            "attack = ? AND x_adv IS NOT NULL", (run_id, seed, attack))
        return {i: torch.from_numpy(np.frombuffer(blob, dtype=np.float32).copy()).view(shape)
                for i, blob in rows}

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RunError(RuntimeError):
    """A run that cannot go on as asked (the message says why and what to do)."""


class RunDirectoryBusy(RunError):
    """Another process is writing into the run directory."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: the message says what was recorded and how to resume."""


class RunLock:
    """Exclusive use of a run directory by one process: an advisory lock (``flock``) on
    ``run.lock`` inside it, taken without waiting and released when the process ends, however
    it ends (a SIGKILLed run leaves nothing to clean up). A run that ends removes the file
    (while still holding the lock; a process that opened it just before takes the lock on the
    removed file, sees that and tries again on the new one)."""

    NAME = "run.lock"

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / self.NAME
        self.file = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            self.file = open(self.path, "a+")
            try:
                fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.file.seek(0)
                holder = self.file.read().strip() or "unknown"
                self.file.close()
                raise RunDirectoryBusy(
                    f"run directory {self.path.parent} is in use by another advpure process "
                    f"(pid {holder}): wait for it to finish, or write to another directory"
                ) from None
            if self._still_the_lock_file():
                break
            self.file.close()                  # removed by the run that just ended: again
        self.file.truncate(0)
        self.file.write(str(os.getpid()))
        self.file.flush()
        return self

    def _still_the_lock_file(self) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(self.file.fileno()).st_ino
        except FileNotFoundError:
            return False

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()
