"""Time per gradient evaluation of EntropySGD-AT against PGD-AT (Kanai et al.: "almost the same as SGD";
target: EntropySGD-AT within 1.1x of PGD-AT).

A gradient evaluation is one mini-batch: the PGD-10 attack and one weight gradient (PGD-AT: then an SGD
step; EntropySGD-AT: then a Langevin step, and every L mini-batches an outer step). Each variant trains
one epoch with Lightning on the same real MNIST images, net and PGD-10 attack (batch 128, no validation);
time per gradient evaluation = epoch time / number of mini-batches, as wall time and as the process's CPU
time (the steadier measure on a shared machine). The AWP pair compares AWP with SGD
(AWPAT) and AWP+EnSGD: both pay AWP's extra forward/backward. Variants run interleaved, ``--repeats``
times; the best time of each is kept. Results are printed and written to
benchmarks/results/entropysgd_{net}.json.

    python benchmarks/bench_entropysgd.py [--n 2560] [--net cnn|mlp] [--L 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os

import torch
from _timing import mnist_loader, timed_epoch, write_result
from torch.utils.data import DataLoader

from lit_robust.attacks import PGD
from lit_robust.methods import PGDAT
from lit_robust.methods.entropysgd_at import AWPAT, EntropySGDAT
from lit_robust.nets import MLP, SmallCNN
from lit_robust.optim import EntropySGD


def make_net(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return MLP() if kind == "mlp" else SmallCNN(channels=[16, 32], hidden=128)


def sgd(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True)


def variants(L: int) -> dict:
    def ensgd(order: int):
        return lambda params: EntropySGD(params, lr=1.0, momentum=0.0, L=L, sgld_lr=0.05, order=order)

    return {
        "PGD-AT (SGD)": lambda net, atk: PGDAT(net=net, eps=0.3, train_attack=atk, optimizer=sgd),
        "AT+EnSGD": lambda net, atk: EntropySGDAT(net=net, eps=0.3, train_attack=atk, optimizer=ensgd(1)),
        "AT+2ndEnSGD": lambda net, atk: EntropySGDAT(net=net, eps=0.3, train_attack=atk, optimizer=ensgd(2)),
        "AWP (SGD)": lambda net, atk: AWPAT(net=net, eps=0.3, train_attack=atk, optimizer=sgd),
        "AWP+EnSGD": lambda net, atk: EntropySGDAT(
            net=net, eps=0.3, train_attack=atk, awp_gamma=0.005, optimizer=ensgd(1)
        ),
    }


def epoch_seconds(build, net_kind: str, loader: DataLoader) -> tuple[float, float]:
    """(wall, CPU) seconds of one training epoch."""
    return timed_epoch(build(make_net(net_kind), PGD(0.3, steps=10, alpha=0.04, keep_best=False)), loader)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2560)
    parser.add_argument("--net", choices=["mlp", "cnn"], default="cnn")
    parser.add_argument("--L", type=int, default=20)  # configs/mnist_entropysgd_at.yaml
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data_dir", default="data")
    args = parser.parse_args()
    loader = mnist_loader(args.n, args.data_dir, batch_size=128)
    batches = len(loader)
    runs = variants(args.L)
    epoch_seconds(runs["PGD-AT (SGD)"], args.net, loader)  # warm-up (imports, first-call overheads)
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, build in runs.items():
            w, c = epoch_seconds(build, args.net, loader)
            wall[name].append(w)
            cpu[name].append(c)
    per_grad = {name: min(t) / batches for name, t in wall.items()}
    per_grad_cpu = {name: min(t) / batches for name, t in cpu.items()}
    base, base_cpu = per_grad["PGD-AT (SGD)"], per_grad_cpu["PGD-AT (SGD)"]
    result = {
        "benchmark": f"one epoch, {args.net}, {args.n} MNIST images, batch 128, PGD-10, L={args.L}",
        "gradient_evaluations": batches,
        "seconds_per_gradient_evaluation": per_grad,
        "cpu_seconds_per_gradient_evaluation": per_grad_cpu,
        "ratio_to_pgd_at": {name: t / base for name, t in per_grad.items()},
        "cpu_ratio_to_pgd_at": {name: t / base_cpu for name, t in per_grad_cpu.items()},
        "awp_ensgd_ratio_to_awp": per_grad["AWP+EnSGD"] / per_grad["AWP (SGD)"],
        "awp_ensgd_cpu_ratio_to_awp": per_grad_cpu["AWP+EnSGD"] / per_grad_cpu["AWP (SGD)"],
        "all_epoch_seconds": wall,
        "all_epoch_cpu_seconds": cpu,
        "load_average_at_end": list(os.getloadavg()),
    }
    write_result(f"entropysgd_{args.net}", result)
    print(result["benchmark"])
    for name, t in per_grad.items():
        ratio, cpu_ratio = result["ratio_to_pgd_at"][name], result["cpu_ratio_to_pgd_at"][name]
        print(
            f"  {name:14s} {1000 * t:6.1f} ms wall ({ratio:.3f}x), "
            f"{1000 * per_grad_cpu[name]:6.1f} ms CPU ({cpu_ratio:.3f}x) per gradient evaluation"
        )
    print(
        f"  AWP+EnSGD / AWP (SGD): {result['awp_ensgd_ratio_to_awp']:.3f}x wall, "
        f"{result['awp_ensgd_cpu_ratio_to_awp']:.3f}x CPU (best of {args.repeats})"
    )


if __name__ == "__main__":
    main()
