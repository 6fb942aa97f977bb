"""Time per gradient evaluation of EntropySGD-AT against PGD-AT (Kanai et al.: "almost the same as SGD";
target: EntropySGD-AT within 1.05x of PGD-AT, every variant).

A gradient evaluation is one mini-batch: the PGD-10 attack and one weight gradient (PGD-AT: then an SGD
step; EntropySGD-AT: then a Langevin step, and every L mini-batches an outer step). Each variant trains
one epoch with Lightning on the same real MNIST images, net and PGD-10 attack (batch 128, no validation);
time per gradient evaluation = epoch time / number of mini-batches. The AWP pair compares AWP with SGD
(AWPAT) and AWP+EnSGD: both pay AWP's extra forward/backward. Variants run interleaved, ``--repeats``
rounds; each ratio is the median of the rounds' ratios. Part of ``make bench`` (benchmarks/bench.py).

    python benchmarks/bench_entropysgd.py [--n 2560] [--net cnn|mlp] [--L 20] [--repeats 5]
"""

from __future__ import annotations

import argparse

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

from lit_robust.attacks import PGD
from lit_robust.methods import PGDAT
from lit_robust.methods.entropysgd_at import AWPAT, EntropySGDAT
from lit_robust.nets import MLP, SmallCNN
from lit_robust.optim import EntropySGD

SECTION = "EntropySGD-AT"


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


def epoch_seconds(build, net_kind: str, loader: DataLoader) -> float:
    """Wall seconds of one training epoch (from its first batch to its last)."""
    return timed_epoch(build(make_net(net_kind), PGD(0.3, steps=10, alpha=0.04, keep_best=False)), loader)[0]


def rows(opts: argparse.Namespace) -> list[dict]:
    """Per gradient evaluation, each EntropySGD variant over PGD-AT with SGD, and AWP+EnSGD over AWP with
    SGD (both pay AWP's extra pass); interleaved rounds, paired medians."""
    quiet()
    torch.set_num_threads(2)
    loader = mnist_loader(opts.n, opts.data_dir, batch_size=128)
    runs = variants(opts.L)
    peak = PeakRSS()
    peak.reset()
    t = interleaved(
        {name: (lambda b=build: epoch_seconds(b, opts.net, loader)) for name, build in runs.items()},
        opts.repeats,
    )
    mib = peak.mib()
    where = f"{opts.net}, {len(loader)} batches of 128, L={opts.L}"
    limit = "the Langevin step's extra passes over the weights (SGLD noise, the running mean, order-2 terms)"
    out = [
        row(
            SECTION,
            f"{name} / PGD-AT (SGD) per gradient evaluation ({where})",
            paired(t, name, "PGD-AT (SGD)"),
            1.05,
            peak_mib=mib,
            limit=limit,
            ms_per_gradient=1000 * median(t[name]) / len(loader),
        )
        for name in ("AT+EnSGD", "AT+2ndEnSGD")
    ]
    out.append(
        row(
            SECTION,
            f"AWP+EnSGD / AWP (SGD) per gradient evaluation ({where})",
            paired(t, "AWP+EnSGD", "AWP (SGD)"),
            1.05,
            peak_mib=mib,
            limit=limit,
            ms_per_gradient=1000 * median(t["AWP+EnSGD"]) / len(loader),
        )
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2560)
    parser.add_argument("--net", choices=["mlp", "cnn"], default="cnn")
    parser.add_argument("--L", type=int, default=20)  # configs/mnist_entropysgd_at.yaml
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data_dir", default="data")
    print(table(rows(parser.parse_args())))


if __name__ == "__main__":
    main()
