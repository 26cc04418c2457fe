"""A store's artifacts: safetensors files under its artifacts directory, each recorded with its path
relative to that directory and its SHA-256, which is checked on every read; JSON ones in the database.

>>> store.save_arrays(run_id, "weights", {"dense_1.weight": w})   # write the file, then record it
>>> arrays, metadata = store.load_arrays(run_id, "weights")       # DamagedArtifact if it changed since

Epoch checkpoints are one file per epoch (``<run_id>/checkpoint-<epoch>.safetensors``): a new one
never overwrites the one the database points to. :meth:`Artifacts.commit_epoch` records it
together with its epoch's history row; the one before it is kept as ``checkpoint_previous``, to
fall back on if the newest is damaged; older files are deleted once the commit is done.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from safetensors import SafetensorError
from safetensors.numpy import load as load_bytes, save as save_bytes

from ..errors import DamagedArtifact, StoreError
from .claims import clock, ours, refuse_if_taken
from .schema import artifacts, epochs, runs

EPOCH_COLUMNS = ("loss", "accuracy", "val_loss", "val_accuracy", "seconds")


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it: ``path`` is whole or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())  # on disk before the database can point at it
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a part-written file would hold the space a full disk lacks
        raise


def parse(data: bytes, where: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(arrays, metadata) of a safetensors file's bytes; DamagedArtifact if they are not one."""
    try:
        (size,) = struct.unpack("<Q", data[:8])
        metadata = json.loads(data[8:8 + size]).get("__metadata__") or {}
        return load_bytes(data), metadata
    except (struct.error, ValueError, AttributeError, SafetensorError) as exc:
        raise DamagedArtifact(f"{where}: not a readable safetensors file ({exc})") from None


class Artifacts:
    """The artifact methods of :class:`mnistlab.store.Store` (a mixin: it supplies ``artifacts_dir``,
    ``_verified``, ``_begin`` and ``_connect``)."""

    artifacts_dir: Path
    _verified: dict[tuple, bool]  # (path, size, mtime, sha256) -> the file has those bytes: hashed once

    # -- files ------------------------------------------------------------------------------
    def write_artifact(self, run_id: str, name: str, arrays: dict[str, np.ndarray],
                       metadata: dict[str, str] | None = None) -> tuple[str, str]:
        """Write ``<run_id>/<name>.safetensors`` atomically; returns (its relative path, its SHA-256).
        Nothing is recorded yet: :meth:`save_arrays` or :meth:`commit_epoch` does that."""
        with self._connect() as conn:  # a file of a run another process has taken over would replace its own
            refuse_if_taken(conn, run_id)
        data = save_bytes({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata=metadata)
        relative = f"{run_id}/{name}.safetensors"
        try:
            write_atomic(self.artifacts_dir / relative, data)
        except OSError as exc:  # a full disk, a folder made read-only: the store's problem, not the run's
            raise StoreError(f"{self.artifacts_dir / relative}: cannot write ({exc.strerror or exc}); nothing "
                             "of it was recorded: free space (or make the folder writable) and run the same "
                             "command again, and runs resume from their last recorded epoch") from None
        return relative, hashlib.sha256(data).hexdigest()

    def save_arrays(self, run_id: str, kind: str, arrays: dict[str, np.ndarray],
                    metadata: dict[str, str] | None = None) -> Path:
        """Write a safetensors file atomically, then record it (path relative to the store, SHA-256)."""
        relative, digest = self.write_artifact(run_id, kind, arrays, metadata)
        self._put_artifact(run_id, kind, path=relative, sha256=digest)
        return self.artifacts_dir / relative

    def load_arrays(self, run_id: str, kind: str) -> tuple[dict[str, np.ndarray], dict[str, str]] | None:
        """(arrays, metadata) of a recorded file, verified against its SHA-256; None if none is recorded.

        Raises :class:`DamagedArtifact` when the file is missing, changed or unreadable."""
        row = self._artifact(run_id, kind)
        if row is None or not row.path:
            return None
        path = self.artifact_path(run_id, row.path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DamagedArtifact(f"run {run_id}: its {kind} file {path} is missing or unreadable "
                                  f"({exc.strerror or exc})") from None
        if row.sha256 and hashlib.sha256(data).hexdigest() != row.sha256:
            raise DamagedArtifact(f"run {run_id}: its {kind} file {path} is damaged (its SHA-256 is not the "
                                  f"one recorded when it was written; {len(data):,} bytes)")
        return parse(data, f"run {run_id}: its {kind} file {path}")

    def artifact_path(self, run_id: str, stored: str) -> Path:
        """Where a recorded file is: relative paths under this store's artifacts directory. A schema-1
        path (absolute), read without migrating, is looked for here first."""
        path = Path(stored)
        if not path.is_absolute():
            return self.artifacts_dir / path
        here = self.artifacts_dir / run_id / path.name
        return here if here.exists() or not path.exists() else path

    def damage(self, run_ids: list[str]) -> dict[str, str]:
        """Run id -> what is wrong with its recorded weights file (missing, or not the bytes recorded)."""
        if not run_ids:
            return {}
        with self._connect() as conn:
            rows = conn.execute(sa.select(artifacts.c.run_id, artifacts.c.path, artifacts.c.sha256)
                                .where(artifacts.c.kind == "weights")
                                .where(artifacts.c.run_id.in_(list(run_ids)))).all()
        out = {}
        for run_id, stored, digest in rows:
            if stored and (reason := self._file_problem(self.artifact_path(run_id, stored), digest)):
                out[run_id] = reason
        return out

    def _file_problem(self, path: Path, digest: str | None) -> str | None:
        try:
            stat = path.stat()
        except OSError:
            return f"weights file {path} is missing"
        key = (str(path), stat.st_size, stat.st_mtime_ns, digest)
        if key not in self._verified:
            try:
                self._verified[key] = digest is None or hashlib.sha256(path.read_bytes()).hexdigest() == digest
            except OSError:
                self._verified[key] = False
        return None if self._verified[key] else f"weights file {path} is damaged (SHA-256 differs from the one recorded)"

    # -- epochs and their checkpoints ---------------------------------------------------------
    def commit_epoch(self, run_id: str, row: dict[str, float], kind: str, path: str, sha256: str) -> None:
        """Record one epoch's history row and its checkpoint file (written first, by :meth:`write_artifact`)
        in one transaction: after a kill at any point, the store has both or neither. The checkpoint
        recorded until now becomes ``<kind>_previous``; files no longer recorded are then deleted."""
        with self._begin() as conn:
            self._put_epoch(conn, run_id, row)
            self._rotate(conn, run_id, kind, path, sha256)
        self._prune(run_id)

    def _put_epoch(self, conn: sa.Connection, run_id: str, row: dict[str, float]) -> None:
        """One history row, and the run's epoch count and heartbeat; refused (TakenOver) where another
        process has claimed the run meanwhile."""
        if not conn.execute(runs.update().where((runs.c.id == run_id) & ours())
                            .values(epochs_done=int(row["epoch"]), heartbeat=clock(conn))).rowcount:
            refuse_if_taken(conn, run_id)
        conn.execute(epochs.delete().where((epochs.c.run_id == run_id) & (epochs.c.epoch == int(row["epoch"]))))
        conn.execute(epochs.insert().values(run_id=run_id, epoch=int(row["epoch"]),
                                            **{k: row.get(k) for k in EPOCH_COLUMNS}))

    def _rotate(self, conn: sa.Connection, run_id: str, kind: str, path: str, sha256: str) -> None:
        key = (artifacts.c.run_id == run_id) & (artifacts.c.kind == kind)
        current = conn.execute(sa.select(artifacts.c.path, artifacts.c.sha256).where(key)).first()
        if current is not None and current.path != path:
            previous = (artifacts.c.run_id == run_id) & (artifacts.c.kind == f"{kind}_previous")
            conn.execute(artifacts.delete().where(previous))
            conn.execute(artifacts.insert().values(run_id=run_id, kind=f"{kind}_previous", path=current.path,
                                                   sha256=current.sha256))
        conn.execute(artifacts.delete().where(key))
        conn.execute(artifacts.insert().values(run_id=run_id, kind=kind, path=path, sha256=sha256))

    def _prune(self, run_id: str) -> None:
        """Delete this run's checkpoint files and leftover temporary files that nothing records."""
        folder = self.artifacts_dir / run_id
        if not folder.is_dir():
            return
        with self._connect() as conn:
            kept = {self.artifact_path(run_id, p).name for (p,) in conn.execute(
                sa.select(artifacts.c.path).where((artifacts.c.run_id == run_id) & artifacts.c.path.is_not(None)))}
        for file in folder.iterdir():
            stale = file.name.startswith("checkpoint") or ".tmp" in file.name
            if stale and file.name not in kept:
                file.unlink(missing_ok=True)

    def drop_checkpoints(self, run_id: str) -> None:
        """Forget a finished run's checkpoints (records first, then files: never a record without its file)."""
        with self._begin() as conn:
            conn.execute(artifacts.delete().where((artifacts.c.run_id == run_id)
                                                  & artifacts.c.kind.in_(["checkpoint", "checkpoint_previous"])))
        self._prune(run_id)

    def drop_artifact(self, run_id: str, kind: str) -> None:
        """Forget one artifact, then delete its file."""
        row = self._artifact(run_id, kind)
        with self._begin() as conn:
            conn.execute(artifacts.delete().where((artifacts.c.run_id == run_id) & (artifacts.c.kind == kind)))
        if row is not None and row.path:
            self.artifact_path(run_id, row.path).unlink(missing_ok=True)

    # -- records ----------------------------------------------------------------------------
    def save_json(self, run_id: str, kind: str, data: Any) -> None:
        self._put_artifact(run_id, kind, data=data)

    def load_json(self, run_id: str, kind: str) -> Any:
        row = self._artifact(run_id, kind)
        return None if row is None else row.data

    def _put_artifact(self, run_id: str, kind: str, **values: Any) -> None:
        key = (artifacts.c.run_id == run_id) & (artifacts.c.kind == kind)
        with self._begin() as conn:
            refuse_if_taken(conn, run_id)
            conn.execute(artifacts.delete().where(key))
            conn.execute(artifacts.insert().values(run_id=run_id, kind=kind, **values))

    def _artifact(self, run_id: str, kind: str):
        with self._connect() as conn:
            return conn.execute(sa.select(artifacts).where((artifacts.c.run_id == run_id)
                                                           & (artifacts.c.kind == kind))).first()
