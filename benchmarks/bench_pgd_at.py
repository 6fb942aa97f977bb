"""Speed of lit_robust's PGD-AT epoch against a hand-written PyTorch loop doing the same work.

Both train the same net with the same PGD-10 attack object on the same real MNIST images (batch 128),
so the difference is Lightning's and the module's overhead (logging, metrics, hooks). Target: lit_robust
within 10% of the hand-written loop. Results are printed and written to benchmarks/results/.

    python benchmarks/bench_pgd_at.py [--n 5000] [--net mlp|cnn] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from _timing import mnist_loader, timed_epoch, write_result
from torch.utils.data import DataLoader

from lit_robust.attacks import PGD
from lit_robust.methods import PGDAT
from lit_robust.nets import MLP, SmallCNN


def make_net(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return MLP() if kind == "mlp" else SmallCNN(channels=[16, 32], hidden=128)


def attack() -> PGD:
    return PGD(0.3, steps=10, alpha=0.075, keep_best=False)


def hand_written_epoch(net: torch.nn.Module, loader: DataLoader) -> float:
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    atk = attack()
    net.train()
    start = time.perf_counter()
    for x, y in loader:
        x_adv = atk(net, x, y)
        loss = F.cross_entropy(net(x_adv), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def lightning_epoch(net: torch.nn.Module, loader: DataLoader) -> float:
    return timed_epoch(PGDAT(net=net, eps=0.3, train_attack=attack()), loader)[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--net", choices=["mlp", "cnn"], default="mlp")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data_dir", default="data")
    args = parser.parse_args()
    loader = mnist_loader(args.n, args.data_dir, batch_size=128)
    lightning_epoch(make_net(args.net), loader)  # warm-up (imports, first-call overheads)
    hand, lit = [], []
    for _ in range(args.repeats):
        hand.append(hand_written_epoch(make_net(args.net), loader))
        lit.append(lightning_epoch(make_net(args.net), loader))
    result = {
        "benchmark": f"PGD-10 AT epoch, {args.net}, {args.n} MNIST images, batch 128",
        "hand_written_s": min(hand),
        "lit_robust_s": min(lit),
        "overhead": min(lit) / min(hand) - 1,
    }
    write_result(f"pgd_at_{args.net}", result)
    print(
        f"{result['benchmark']}: hand-written {result['hand_written_s']:.2f} s, lit_robust "
        f"{result['lit_robust_s']:.2f} s, overhead {100 * result['overhead']:+.1f}% (best of {args.repeats})"
    )


if __name__ == "__main__":
    main()
