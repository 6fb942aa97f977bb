"""Time per training epoch of AROVR^g_{alpha,beta} against back-propagation on the same net and data.

Both train the lifted 784-256-256-10 MLP (``lit_robust.nets.lifted.LiftedMLP``) with Adam 2e-4, batch 50,
on the same 5000 real MNIST images, through ``lightning.Trainer`` (validation off), with the module of
``configs/mnist_arovr_g.yaml`` (``AROVR``, variant ``arovr_g``: two inferences of 20 top-down sweeps per
step) and of ``configs/mnist_bp_mlp.yaml`` (variant ``bp``: back-propagation of the same Euclidean loss).
The paper (Zach, arXiv 2503.07818) reports an AROVR epoch at about 5x a BP epoch on CPU; target <= 3x.
Also reported: the bare per-step cost (inference + update, no Lightning) of both, and the other variants.
Results are printed and written to benchmarks/results/arovr.json.

    OMP_NUM_THREADS=1 python benchmarks/bench_arovr.py [--n 5000] [--repeats 3] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import time

import torch
from _timing import mnist_loader, timed_epoch, write_result
from torch.utils.data import DataLoader

from lit_robust.methods.arovr import AROVR
from lit_robust.nets.lifted import LiftedMLP

VARIANTS = ("bp", "arovr", "arovr_ab", "arovr_g")


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


def bare_step_ms(variant: str, batches: list, device: str, n_steps: int = 40) -> float:
    """Mean time of ``training_loss`` + backward + Adam step without Lightning (logging stubbed)."""
    model = make_module(variant).to(device)
    model.log = model.log_dict = model.log_accuracy = lambda *a, **k: None  # type: ignore[method-assign]
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    batches = [(x.to(device), y.to(device)) for x, y in batches]

    def step(i: int) -> None:
        loss = model.training_loss(batches[i % len(batches)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(5):
        step(i)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(n_steps):
        step(i)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / n_steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    loader = mnist_loader(args.n, args.data_dir, batch_size=50, val_size=10_000)
    batches = [b for _, b in zip(range(20), loader, strict=False)]
    lightning_epoch("bp", loader, args.device)  # warm-up (imports, first-call overheads)
    epochs: dict[str, list[float]] = {v: [] for v in ("bp", "arovr_g")}
    for _ in range(args.repeats):  # interleaved, so that load changes hit both alike
        for v in epochs:
            epochs[v].append(lightning_epoch(v, loader, args.device))
    steps = {v: bare_step_ms(v, batches, args.device) for v in VARIANTS}
    bp_s, g_s = min(epochs["bp"]), min(epochs["arovr_g"])
    result = {
        "benchmark": f"training epoch, LiftedMLP 784-256-256-10, {args.n} MNIST images, batch 50, Adam 2e-4",
        "bp_epoch_s": bp_s,
        "arovr_g_epoch_s": g_s,
        "epoch_ratio": g_s / bp_s,
        "epoch_times_s": epochs,
        "bare_step_ms": steps,
        "bare_step_ratio": {v: steps[v] / steps["bp"] for v in VARIANTS},
        "paper_ratio": 5.0,
        "target_ratio": 3.0,
        "device": args.device,
    }
    write_result("arovr", result)
    threads = torch.get_num_threads()
    print(f"\n{result['benchmark']} ({args.device}, {threads} thread(s), best of {args.repeats})\n")
    print("| | backprop | AROVR^g_{a,b} | ratio (paper ~5x, target <= 3x) |")
    print("|---|---:|---:|---:|")
    print(f"| Lightning epoch (s) | {bp_s:.2f} | {g_s:.2f} | {g_s / bp_s:.2f}x |")
    print(
        f"| bare step (ms) | {steps['bp']:.2f} | {steps['arovr_g']:.2f} | "
        f"{steps['arovr_g'] / steps['bp']:.2f}x |"
    )
    print("\nbare step, all variants (ms): " + ", ".join(f"{v} {steps[v]:.2f}" for v in VARIANTS))


if __name__ == "__main__":
    main()
