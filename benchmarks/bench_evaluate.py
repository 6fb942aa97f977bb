"""``evaluate``'s cost: seconds per attack per 1,000 images for the standard suite (PGD-20, PGD-50x5,
APGD-CE, APGD-T, BETA-10, the official AutoAttack) on real MNIST test images at L_inf eps 0.3, with the
demo CNN briefly adversarially trained (a few hundred PGD-AT steps), 2 threads.

Attacks run on the clean-correct points only, and AutoAttack's later components only on the points its
earlier ones left: the seconds depend on how robust the model is, so the robust accuracy is reported with
them (a more robust model costs more: docs/demo_eval/ has a full-strength run).

    python benchmarks/bench_evaluate.py [--n 200] [--quick]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _timing import PeakRSS, mnist_loader, quiet, row, table

from lit_robust.attacks import PGD
from lit_robust.data import MNIST
from lit_robust.evaluation import build_suite, run_attacks
from lit_robust.nets import SmallCNN

SECTION = "evaluate"
EPS = 0.3


def trained_net(data_dir: str, batches: int) -> torch.nn.Module:
    """The demo CNN after ``batches`` PGD-10 adversarial-training steps (Adam 1e-3, batch 128)."""
    torch.manual_seed(0)
    net = SmallCNN(channels=[16, 32], hidden=128)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    attack = PGD(EPS, steps=10, alpha=EPS / 4, keep_best=False, seed=0)
    loader = mnist_loader(128 * batches, data_dir, batch_size=128)
    for i, (x, y) in enumerate(loader):
        attack.eps = min(EPS, EPS * (i + 1) / (batches / 2))  # ramp eps over the first half
        net.train()
        loss = F.cross_entropy(net(attack(net, x, y)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()


def rows(opts: argparse.Namespace) -> list[dict]:
    quiet()
    torch.set_num_threads(2)
    net = trained_net(opts.data_dir, 60 if opts.quick else 300)
    dm = MNIST(data_dir=opts.data_dir, test_subset=opts.n, eval_batch_size=opts.n)
    dm.setup("test")
    attacks = {name: attack.bind(EPS, "inf") for name, attack in build_suite("standard", "inf").items()}
    if opts.quick:  # a smoke test: reduced AutoAttack budgets
        attacks["autoattack"].steps, attacks["autoattack"].square_queries = 10, 100
    peak = PeakRSS()
    peak.reset()
    report = run_attacks(net, dm.test_dataloader(), attacks)
    mib = peak.mib()
    acc = report.accuracies()
    per_1000 = {name: 1000 * s / opts.n for name, s in report.seconds.items()}
    return [
        row(
            SECTION,
            f"{name}: seconds per 1,000 images (demo CNN, robust accuracy {100 * acc[name]:.1f}%)",
            per_1000[name],
            None,
            unit="s",
            peak_mib=mib,
            note=f"clean accuracy {100 * acc['clean']:.1f}%; {opts.n} test images",
        )
        for name in attacks
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data_dir", default="data")
    print(table(rows(parser.parse_args())))


if __name__ == "__main__":
    main()
