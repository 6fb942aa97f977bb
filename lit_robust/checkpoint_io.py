"""Checkpoint writes that a kill cannot corrupt.

Lightning's default writer stages the file in the system temp folder and moves it into place; when that
folder is on another file system than the checkpoints (node-local ``/tmp`` and a network file system on a
cluster) the move is a copy, and a job killed during it leaves a truncated ``last.ckpt``. Here the bytes
go to a temporary file in the checkpoint's own folder, are flushed to disk (``fsync``), and replace the
old file in one ``os.replace``: at every moment ``last.ckpt`` is either the previous checkpoint or the
new one. Temporary files of a writer killed earlier are removed by the next successful write.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lit_robust.checkpoint import TRUST_ENV

__all__ = ["AtomicCheckpointIO", "atomic_file", "atomic_save"]


@contextlib.contextmanager
def atomic_file(path: _PATH, mode: str = "wb") -> Iterator[IO]:
    """A file object whose content replaces ``path`` in one step when the block ends: it is written to a
    temporary file in the same folder, flushed to disk (``fsync``) and renamed over ``path``; on an error,
    or a kill, ``path`` keeps its old content. Temporary files a killed writer left are removed after."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}."
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": ""})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    for stale in path.parent.glob(f"{prefix}*.tmp"):  # left by a writer that was killed
        with contextlib.suppress(OSError):
            stale.unlink()


def atomic_save(obj: Any, path: _PATH) -> None:
    """``torch.save(obj, path)`` through :func:`atomic_file`."""
    with atomic_file(path) as f:
        torch.save(obj, f)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local writes are atomic (:func:`atomic_save`; remote URLs such as
    ``s3://`` keep Lightning's writer) and whose loads are ``weights_only=True`` unless
    ``LIT_ROBUST_TRUST_CHECKPOINTS=1``. ``RobustClassifier.setup`` installs it in place of the default."""

    def load_checkpoint(
        self, path: _PATH, map_location: Any = None, weights_only: bool | None = None
    ) -> dict:
        if weights_only is None:
            weights_only = os.environ.get(TRUST_ENV) != "1"
        if map_location is None:
            return super().load_checkpoint(path, weights_only=weights_only)
        return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_save(checkpoint, path)
