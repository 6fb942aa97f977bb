"""Time per training epoch of AROVR^g_{alpha,beta} against back-propagation on the same net and data.

Both train the lifted 784-256-256-10 MLP (``lit_robust.nets.lifted.LiftedMLP``) with Adam 2e-4, batch 50,
on the same 5000 real MNIST images, through ``lightning.Trainer`` (validation off), with the module of
``configs/mnist_arovr_g.yaml`` (``AROVR``, variant ``arovr_g``: two inferences of 20 top-down sweeps per
step) and of ``configs/mnist_bp_mlp.yaml`` (variant ``bp``: back-propagation of the same Euclidean loss).
The paper (Zach, arXiv 2503.07818) reports an AROVR epoch at about 5x a BP epoch on CPU; target <= 3x.
The target is on the bare per-step cost (inference + update, no Lightning), where the epoch ratio is not
diluted by per-batch costs both pay; the epoch ratio and the other variants are reported beside it. One
thread, interleaved rounds, paired medians; part of ``make bench`` (benchmarks/bench.py).

    python benchmarks/bench_arovr.py [--n 5000] [--repeats 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import time

import torch
from _timing import (
    PeakRSS,
    interleaved,
    median,
    mnist_loader,
    paired,
    quiet,
    row,
    table,
    timed_epoch,
)
from torch.utils.data import DataLoader

from lit_robust.methods.arovr import AROVR
from lit_robust.nets.lifted import LiftedMLP

VARIANTS = ("bp", "arovr", "arovr_ab", "arovr_g")
SECTION = "AROVR"


def make_module(variant: str) -> AROVR:
    torch.manual_seed(0)
    return AROVR(
        net=LiftedMLP(),
        variant=variant,
        alpha=0.49,
        beta=0.25,
        optimizer=lambda p: torch.optim.Adam(p, lr=2e-4),
    )


def lightning_epoch(variant: str, loader: DataLoader, device: str) -> float:
    return timed_epoch(make_module(variant), loader, device)[0]


def bare_step_ms(variant: str, batches: list, device: str, n_steps: int = 20) -> float:
    """Mean time of ``training_loss`` + backward + Adam step without Lightning (logging stubbed), over
    ``n_steps`` steps after 3 warm-up steps."""
    model = make_module(variant).to(device)
    model.log = model.log_dict = model.log_accuracy = lambda *a, **k: None  # type: ignore[method-assign]
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    batches = [(x.to(device), y.to(device)) for x, y in batches]

    def step(i: int) -> None:
        loss = model.training_loss(batches[i % len(batches)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(3):
        step(i)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(n_steps):
        step(i)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / n_steps * 1000


def multiply_adds(variant: str) -> int:
    """Multiply-adds per sample of one training step, counted from the layer sizes: backprop = forward F
    + weight gradients F + input gradients of the layers above the first; AROVR^g = the forward pass +
    one inference on the 2 stacked states (z+, z-) of ``n_sweeps`` sweeps, each two products per layer
    above the first (the block's pre-activation and the residual's W^T e) + the two potentials and their
    weight gradients (the first layer's drive shared)."""
    module = make_module(variant)
    sizes = [lin.in_features * lin.out_features for lin in module.net.linears]
    total, first = sum(sizes), sizes[0]
    if variant == "bp":
        return 2 * total + (total - first)
    sweeps = module.n_sweeps
    return total + 2 * sweeps * 2 * (total - first) + 2 * (first + 2 * (total - first))


def rows(opts: argparse.Namespace) -> list[dict]:
    """AROVR^g over backprop per bare training step (the target) and per Lightning epoch (reported),
    1 thread (as the paper's CPU comparison), interleaved rounds and paired medians."""
    quiet()
    torch.set_num_threads(1)
    loader = mnist_loader(opts.n, opts.data_dir, batch_size=50, val_size=10_000)
    batches = [b for _, b in zip(range(20), loader, strict=False)]
    peak = PeakRSS()
    peak.reset()
    steps: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(opts.repeats):  # interleaved rounds of the bare steps' own timings (ms per step)
        for v in VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]:
            steps[v].append(bare_step_ms(v, batches, opts.device))
    epochs = interleaved(
        {v: (lambda v=v: lightning_epoch(v, loader, opts.device)) for v in ("bp", "arovr_g")},
        max(3, opts.repeats // 2),
    )
    mib = peak.mib()
    torch.set_num_threads(2)
    step_ms = {v: median(t) for v, t in steps.items()}
    step_ratio = paired(steps, "arovr_g", "bp")
    arith = multiply_adds("arovr_g") / multiply_adds("bp")
    return [
        row(
            SECTION,
            "AROVR^g_{a,b} / backprop per bare training step (LiftedMLP 784-256-256-10, batch 50, 1 thread)",
            step_ratio,
            3.0,
            peak_mib=mib,
            limit=f"arithmetic: AROVR^g does {arith:.1f}x backprop's multiply-adds per sample (inference "
            "of the 2 stacked states, 20 sweeps of 2 layer-sized products); 3x needs fewer sweeps, i.e. "
            "another algorithm than the paper's",
            arithmetic_ratio=arith,
            note="paper: about 5x; all variants' bare steps (relative): "
            + ", ".join(f"{v} {step_ms[v] / step_ms['bp']:.2f}" for v in VARIANTS),
        ),
        row(
            SECTION,
            "AROVR^g_{a,b} / backprop per Lightning epoch (5000 images, 1 thread)",
            paired(epochs, "arovr_g", "bp"),
            None,
            peak_mib=mib,
            note="reported beside the bare-step target: the epoch adds the same per-batch costs to both",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    print(table(rows(parser.parse_args())))


if __name__ == "__main__":
    main()
