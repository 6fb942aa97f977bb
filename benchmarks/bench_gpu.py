"""PGD-10 adversarial-training throughput on synthetic CIFAR-shaped data, through the real pipeline.

Each row is a ``PGDAT`` fit under a Lightning ``Trainer`` (PGD-10, L_inf eps 8/255, step 2/255, SGD
momentum, batch 128) on synthetic CIFAR-10 files read by :class:`lit_robust.data.CIFAR10` (pinned memory
on CUDA, crop + flip on the device): PreAct ResNet-18 in fp32, bf16 (``precision=bf16-mixed``: attacks
and training step in bf16 autocast), bf16 + ``model.channels_last``, and + ``model.compile``; one
WideResNet-34-10 row. Images/s are timed over the steps after the warm-up (compilation, cuDNN autotuning),
with the device synchronised at both ends. The last row is what the data pipeline alone delivers
(loader + transfer + augmentation), which must exceed what PGD-10 training consumes.

    bash benchmarks/gpu.sh                      # one GPU, under 5 minutes
    bash benchmarks/gpu.sh --tiny --device cpu  # tiny nets and batches: a smoke test (in the test suite)

Writes ``benchmarks/results/gpu.json`` (``--out``) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer

from lit_robust.attacks import PGD
from lit_robust.data import CIFAR10
from lit_robust.data.base import random_crop_flip
from lit_robust.data.synthetic import write_synthetic_cifar10
from lit_robust.methods import PGDAT
from lit_robust.nets import PreActResNet, WideResNet
from lit_robust.quiet import quiet_third_party

#: (net, variant, trainer precision, channels_last, compile)
ROWS = [
    ("PreActResNet-18", "fp32", "32-true", False, False),
    ("PreActResNet-18", "bf16", "bf16-mixed", False, False),
    ("PreActResNet-18", "bf16 + channels_last", "bf16-mixed", True, False),
    ("PreActResNet-18", "bf16 + channels_last + compile", "bf16-mixed", True, True),
    ("WideResNet-34-10", "bf16 + channels_last", "bf16-mixed", True, False),
]


def make_net(name: str, tiny: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "PreActResNet-18":
        return PreActResNet([1, 1, 1, 1], base_width=8) if tiny else PreActResNet([2, 2, 2, 2])
    return WideResNet(depth=10, widen=1) if tiny else WideResNet(depth=34, widen=10)


class Throughput(Callback):
    """Wall time of the training steps after the first ``warmup``, the device synchronised at both ends."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = self.end = 0.0

    def _now(self, trainer: Trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.start = self._now(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.end = self._now(trainer)


def datamodule(root: str, batch: int) -> CIFAR10:
    return CIFAR10(data_dir=root, batch_size=batch, val_size=0, augment=True, num_workers=0)


def peak_memory_mib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB; process peak so far


def train_row(row: tuple, args: argparse.Namespace, root: str) -> dict:
    net_name, variant, precision, channels_last, compile_ = row
    steps, warmup = (
        (args.wrn_steps, args.wrn_warmup) if net_name.startswith("Wide") else (args.steps, args.warmup)
    )
    if compile_:
        warmup += args.compile_warmup
    module = PGDAT(
        net=make_net(net_name, args.tiny),
        eps=8 / 255,
        train_attack=PGD(steps=10, alpha=2 / 255, keep_best=False),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
        channels_last=channels_last,
        compile=compile_,
    )
    timer = Throughput(warmup)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(
        accelerator="gpu" if args.device == "cuda" else "cpu",
        devices=1,
        precision=precision,
        max_steps=warmup + steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
        benchmark=args.device == "cuda",
        callbacks=[timer],
    )
    trainer.fit(module, datamodule=datamodule(root, args.batch))
    seconds = timer.end - timer.start
    return {
        "net": net_name,
        "variant": variant,
        "images_per_s": steps * args.batch / seconds,
        "step_ms": 1000 * seconds / steps,
        "timed_steps": steps,
        "peak_memory_mib": peak_memory_mib(args.device),
    }


def loader_row(args: argparse.Namespace, root: str) -> dict:
    """Images/s of the training pipeline alone: the loader's batches, copied to the device (non-blocking,
    from pinned memory on CUDA) and augmented there, as a fit does."""
    dm = datamodule(root, args.batch)
    dm.setup("fit")
    device = torch.device(args.device)
    loader = torch.utils.data.DataLoader(
        dm.train_dataset,
        batch_size=args.batch,
        shuffle=True,
        pin_memory=args.device == "cuda",
        drop_last=True,
    )
    images, start = 0, 0.0
    for epoch in range(2):  # epoch 0 warms up
        if epoch == 1:
            start = time.perf_counter()
        for x, y in loader:
            x = random_crop_flip(x.to(device, non_blocking=True))
            y = y.to(device, non_blocking=True)
            images += len(x) * epoch
    if args.device == "cuda":
        torch.cuda.synchronize()
    return {
        "net": "data pipeline",
        "variant": "CIFAR10 loader + transfer + crop/flip",
        "images_per_s": images / (time.perf_counter() - start),
        "peak_memory_mib": peak_memory_mib(args.device),
    }


def table(rows: list[dict]) -> str:
    lines = ["| net | variant | images/s | step (ms) | peak memory (MiB) |", "|---|---|---:|---:|---:|"]
    for r in rows:
        step = f"{r['step_ms']:.1f}" if "step_ms" in r else ""
        lines.append(
            f"| {r['net']} | {r['variant']} | {r['images_per_s']:.0f} | {step} | {r['peak_memory_mib']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny nets, batch 8, 2 timed steps (smoke test)")
    parser.add_argument("--batch", type=int, default=None, help="default 128 (8 with --tiny)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per ResNet row (default 40)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed first steps (default 10)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu.json"))
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device (use --device cpu, with --tiny on a CPU)")
    args.batch = args.batch or (8 if args.tiny else 128)
    args.steps = args.steps or (2 if args.tiny else 40)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 10)
    args.wrn_steps, args.wrn_warmup = (2, 1) if args.tiny else (10, 3)
    args.compile_warmup = 0 if args.tiny else 10
    quiet_third_party()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # per-fit banners: only the table
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        most = max(args.warmup + args.steps + args.compile_warmup, args.wrn_warmup + args.wrn_steps)
        n_train = -(-most * args.batch // 5) * 5  # whole batches for every row, a multiple of 5
        write_synthetic_cifar10(root, n_train=n_train, n_test=10)
        rows = [train_row(row, args, root) for row in ROWS]
        rows.append(loader_row(args, root))
    fastest = max(r["images_per_s"] for r in rows[:-1])
    device = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "CPU"
    result = {
        "device": device,
        "tiny": args.tiny,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "rows": rows,
        "loader_over_fastest_training": rows[-1]["images_per_s"] / fastest,
        "seconds": time.perf_counter() - started,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\n{device}, torch {torch.__version__}, batch {args.batch}{' (tiny)' if args.tiny else ''}")
    print(table(rows))
    print(
        f"data pipeline / fastest PGD-10 training row: {result['loader_over_fastest_training']:.1f}x; "
        f"{result['seconds']:.0f} s in all; wrote {out}"
    )
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
