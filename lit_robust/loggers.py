"""The default CSV logger: Lightning's, except that it continues an existing ``metrics.csv``.

Lightning's ``CSVLogger`` deletes the ``metrics.csv`` it finds in its version folder. A resumed run
(``--ckpt_path last|auto``, :mod:`lit_robust.resume`) writes into the version folder of the run it
continues, so here the file is kept and new rows are appended under its header (new columns rewrite the
header, as Lightning does). :func:`drop_rows_from` removes the rows a killed run logged after the
checkpoint it is resumed from, which the resumed run logs again.
"""

from __future__ import annotations

import csv
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from lit_robust.checkpoint_io import atomic_file

__all__ = ["CSVLogger", "drop_rows_from"]


class _ContinuingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        """Keep an existing metrics.csv; its columns are the starting columns."""
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = list(next(csv.reader(f), []))


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
