"""What the benchmarks share: MNIST batches, a Lightning Trainer that times one bare training epoch, and the
result file."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from lit_robust.data import MNIST


def mnist_loader(n: int, data_dir: str, batch_size: int, val_size: int = 0) -> DataLoader:
    """The first ``n`` images of the seeded MNIST training pool, in a fixed order."""
    dm = MNIST(data_dir=data_dir, train_subset=n, val_size=val_size)
    dm.setup("fit")
    return DataLoader(TensorDataset(*dm.train_dataset.tensors), batch_size=batch_size, shuffle=False)


def timed_epoch(model: LightningModule, loader: DataLoader, accelerator: str = "cpu") -> tuple[float, float]:
    """(wall, CPU) seconds of one ``Trainer.fit`` epoch of ``model`` on ``loader``: no validation,
    logger, checkpoint, progress bar or inference mode (the attacks need gradients)."""
    trainer = Trainer(
        max_epochs=1,
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        inference_mode=False,
    )
    start, cpu = time.perf_counter(), time.process_time()
    trainer.fit(model, train_dataloaders=loader)
    if accelerator == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - cpu


def write_result(name: str, result: dict) -> Path:
    """``result`` plus the machine facts, as ``benchmarks/results/{name}.json``."""
    result = {
        **result,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
    }
    out = Path(__file__).parent / "results" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return out
