"""What the benchmarks share: MNIST batches, a Lightning Trainer that times one bare training epoch,
interleaved timing with paired medians, peak resident memory, and the rows and table of ``make bench``."""

from __future__ import annotations

import logging
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from lit_robust.data import MNIST
from lit_robust.quiet import quiet_third_party


def mnist_loader(n: int, data_dir: str, batch_size: int, val_size: int = 0) -> DataLoader:
    """The first ``n`` images of the seeded MNIST training pool, in a fixed order."""
    dm = MNIST(data_dir=data_dir, train_subset=n, val_size=val_size)
    dm.setup("fit")
    return DataLoader(TensorDataset(*dm.train_dataset.tensors), batch_size=batch_size, shuffle=False)


class _EpochTimer(Callback):
    """Wall and CPU seconds from the start to the end of the (single) training epoch."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start, self.cpu = time.perf_counter(), time.process_time()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        self.wall, self.cpu = time.perf_counter() - self.start, time.process_time() - self.cpu


def timed_epoch(model: LightningModule, loader: DataLoader, accelerator: str = "cpu") -> tuple[float, float]:
    """(wall, CPU) seconds of one ``Trainer.fit`` epoch of ``model`` on ``loader``, from the epoch's start
    to its end (the fit's one-off set-up is not an epoch's cost): no validation, logger, checkpoint,
    progress bar or inference mode (the attacks need gradients)."""
    timer = _EpochTimer()
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
        callbacks=[timer],
    )
    trainer.fit(model, train_dataloaders=loader)
    return timer.wall, timer.cpu


# ---------------------------------------------------------------------------------------------- make bench
def quiet() -> None:
    """Only the tables: lit_robust's filters for third-party tips, and no per-fit Lightning banners."""
    quiet_third_party()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)


def seconds(fn: Callable[[], Any], sync: bool = False) -> float:
    """Wall seconds of one call of ``fn`` (CUDA synchronised at both ends when ``sync``)."""
    if sync:
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if sync:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved(fns: dict[Any, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[Any, list[float]]:
    """Wall seconds of every function, ``repeats`` rounds after ``warmup`` untimed ones; within a round the
    functions run one after the other, in an order rotated every round, so that a change of load or clock
    hits all of them alike."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[Any, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(seconds(fns[name]))
    return times


def median_ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    """Median over rounds of ``times[num][r] / times[den][r]`` (paired: a slow round slows both)."""
    return statistics.median(a / b for a, b in zip(times[num], times[den], strict=True))


def spread(ratios: list[float]) -> str:
    """The range of the middle half of the rounds' ratios (quartiles), e.g. ``"1.02-1.07"``: the noise a
    ratio is measured with on this machine."""
    q = statistics.quantiles(sorted(ratios), n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    return f"{q[0]:.3f}-{q[2]:.3f}"


def ratio_spread(times: dict[str, list[float]], num: str, den: str) -> str:
    """:func:`spread` of the paired ratios ``times[num][r] / times[den][r]``."""
    return spread([a / b for a, b in zip(times[num], times[den], strict=True)])


def median(values: list[float]) -> float:
    return statistics.median(values)


class PeakRSS:
    """Peak resident memory of this process since :meth:`reset`, from Linux's ``VmHWM`` (reset by writing
    5 to ``/proc/self/clear_refs``); on other systems the process's peak so far (``ru_maxrss``)."""

    def reset(self) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass

    def mib(self) -> float:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def paired(times: dict[str, list[float]], num: str, den: str) -> tuple[float, str]:
    """``(median_ratio, ratio_spread)`` of two interleaved series: a row's value with its noise."""
    return median_ratio(times, num, den), ratio_spread(times, num, den)


def row(
    section: str,
    name: str,
    value: float | tuple[float, str],
    target: float | None,
    unit: str = "x",
    limit: str = "",
    peak_mib: float | None = None,
    higher_is_better: bool = False,
    **detail: Any,
) -> dict:
    """One line of the table: ``value`` against ``target`` (an upper bound, or a lower one when
    ``higher_is_better``; None: reported only), and for a miss what limits it. A ``(value, spread)`` pair
    from :func:`paired` also records the spread of the rounds."""
    if isinstance(value, tuple):
        value, detail["rounds"] = value
    if target is None:
        passed = None
    else:
        passed = value >= target if higher_is_better else value <= target
    return {
        "section": section,
        "name": name,
        "value": value,
        "unit": unit,
        "target": target,
        "target_op": ">=" if higher_is_better else "<=",
        "pass": passed,
        "limit": "" if passed else limit,
        "peak_rss_mib": peak_mib,
        "detail": detail,
    }


def table(rows: list[dict]) -> str:
    """The Markdown table of ``rows``."""
    lines = [
        "| section | measurement | value | target | pass | peak RSS (MiB) | what limits it (misses) / note |",
        "|---|---|---:|---:|:---:|---:|---|",
    ]
    for r in rows:
        value = f"{r['value']:.3f}{r['unit']}" if r["unit"] == "x" else f"{r['value']:.3g} {r['unit']}"
        target = "" if r["target"] is None else f"{r['target_op']} {r['target']:g}"
        verdict = {True: "yes", False: "**no**", None: "-"}[r["pass"]]
        peak = "" if r["peak_rss_mib"] is None else f"{r['peak_rss_mib']:.0f}"
        note = r["limit"] or r["detail"].get("note", "")
        if "rounds" in r["detail"]:
            note = f"middle half of the rounds {r['detail']['rounds']}" + (f"; {note}" if note else "")
        lines.append(f"| {r['section']} | {r['name']} | {value} | {target} | {verdict} | {peak} | {note} |")
    return "\n".join(lines)
