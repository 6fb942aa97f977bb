"""The default CSV logger: Lightning's, except that it continues an existing ``metrics.csv``.

Lightning's ``CSVLogger`` deletes the ``metrics.csv`` it finds in its version folder. A resumed run
(``--ckpt_path last|auto``, :mod:`lit_robust.resume`) writes into the version folder of the run it
continues, so here the file is kept and new rows are appended under its header (new columns rewrite the
header, as Lightning does). :func:`drop_rows_from` removes the rows a killed run logged after the
checkpoint it is resumed from, which the resumed run logs again.

Several processes may log into one run's folder at once: ``evaluate`` of a run's checkpoint continues that
run's ``metrics.csv`` (two test chunks at once, or an evaluation while the fit goes on). Each write holds
an exclusive lock on the folder (``flock``) and first takes the columns other writers added, and a header
rewrite replaces the file in one step (a kill leaves the old one): without both, one writer's rewrite read
the file another had just truncated and the run's training rows were lost.
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Iterator
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from lit_robust.checkpoint_io import atomic_file

__all__ = ["CSVLogger", "drop_rows_from"]


class _ContinuingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        """Keep an existing metrics.csv; its columns are the starting columns."""
        self.metrics_keys = self._file_keys()

    def _file_keys(self) -> list[str]:
        if not self._fs.isfile(self.metrics_file_path):
            return []
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            return list(next(csv.reader(f), []))

    def save(self) -> None:
        """Lightning's save (append; a new column rewrites the header) under the folder's lock, after
        taking the columns another writer added since."""
        if not self.metrics:
            return
        with _locked(self.log_dir):
            on_file = self._file_keys()
            self.metrics_keys = on_file + [k for k in self.metrics_keys if k not in on_file]
            super().save()

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        if not os.path.isdir(self.log_dir):  # (a remote file system: Lightning's own rewrite)
            return super()._rewrite_with_new_header(fieldnames)
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            rows = list(csv.DictReader(f))
        with atomic_file(self.metrics_file_path, "w") as f:
            writer = csv.DictWriter(f, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)


@contextlib.contextmanager
def _locked(folder: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``folder`` (a local one, where ``fcntl`` exists) for the block."""
    try:
        import fcntl
    except ImportError:  # (Windows: no lock)
        fcntl = None
    if fcntl is None or not os.path.isdir(folder):  # (a remote file system: no lock)
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # (releases the lock)


class CSVLogger(LightningCSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` that appends to the ``metrics.csv`` of its version folder
    instead of deleting it (same arguments)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment


def drop_rows_from(metrics_csv: str | Path, step: int) -> int:
    """Remove the rows whose ``step`` is >= ``step`` (logged by a killed run after the checkpoint of
    global step ``step``: Lightning logs the metrics of step s as ``s - 1``); returns how many went."""
    path = Path(metrics_csv)
    if not path.is_file():
        return 0
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames or [], list(reader)
    keep = [r for r in rows if not r.get("step") or float(r["step"]) < step]
    if len(keep) == len(rows):
        return 0
    with atomic_file(path, "w") as f:  # a kill leaves the old file, never half of it
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(keep)
    return len(rows) - len(keep)
