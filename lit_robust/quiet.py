"""Quiet by default: the CLI drops third-party output that tells a user nothing about their run.

Dropped (each is harmless here, and said why): Lightning's advertisement tips for other packages
("💡 Tip: ... litlogger/litmodels"), its notice that ``configure_callbacks`` replaces the trainer's
``ModelCheckpoint`` (lit_robust does that on purpose: best and last checkpoints), the deprecation warning
Lightning's own pytree code triggers in torch (``isinstance(treespec, LeafSpec)``), and LightningCLI's
warning about ``args`` next to ``sys.argv`` (our CLI passes rewritten arguments on purpose). Every other
warning and message still shows; ``LIT_ROBUST_DEBUG=1`` keeps everything.
"""

from __future__ import annotations

import logging
import os
import warnings

__all__ = ["quiet_third_party"]

_DROPPED = (
    "💡 Tip:",
    "The following callbacks returned in `LightningModule.configure_callbacks` will override",
)


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(_DROPPED)


def quiet_third_party() -> None:
    """Install the filters (idempotent)."""
    if os.environ.get("LIT_ROBUST_DEBUG") == "1":
        return
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropAdverts) for f in logger.filters):
            logger.addFilter(_DropAdverts())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended to run from within")
