"""Training speed of the methods: Lightning's PGD-AT epoch against a hand-written loop, and every method's
epoch against the cost its passes imply.

On real MNIST (batch 128, the demo CNN, 2 threads):

- **Lightning vs hand-written**: one PGD-AT epoch through ``PGDAT`` + ``Trainer`` against a plain PyTorch
  loop doing the same work (the same attack object, forward, cross-entropy, backward, Adam step); the
  epoch is timed from its first to its last batch (the fit's one-off set-up is not an epoch's cost).
- **passes**: each method's epoch time per batch over what its forward/backward passes cost when measured
  alone in the same process: ``u`` = one forward + backward w.r.t. the input (an attack step) at the
  rows it runs on, ``f`` = one forward without grad, ``e`` = one ERM training step (forward, backward,
  Adam step) at batch 128. ERM = e; PGD-AT (PGD-10) = 10 u + e; TRADES (TRADES-KL-10) = f + 10 u + 2 e;
  MART (PGD-10) = 10 u + 2 e; BETA-AT (BETA-3 on the B(K-1) = 9B rows of every wrong class, on a CPU in
  passes of 2 targets = 256 rows) = f + 4 (3 u(2B) + f(2B)) + (3 u + f) + e; L2NNN (its nonexpansive
  CNN, PGD-10 L_2) = f + 10 u + 2 e with that net's units.

    python benchmarks/bench_methods.py [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F
from _timing import (
    PeakRSS,
    interleaved,
    median,
    mnist_loader,
    paired,
    quiet,
    row,
    spread,
    table,
    timed_epoch,
)
from torch.utils.data import DataLoader

from lit_robust.attacks import BETA, PGD, TRADESKL
from lit_robust.data import CIFAR10, MNIST
from lit_robust.data.base import random_crop_flip
from lit_robust.data.synthetic import write_synthetic_cifar10
from lit_robust.methods import BETAAT, ERM, L2NNN, MART, PGDAT, TRADES
from lit_robust.nets import L2NNNConvNet, SmallCNN
from lit_robust.nets.l2nnn_layers import _row_gram_bound, gram_bound

SECTION = "methods"
EPS = 0.3


def demo_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return SmallCNN(channels=[16, 32], hidden=128)


def l2nnn_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return L2NNNConvNet(conv_channels=[16, 32], fc=[256, 128])


def pgd10() -> PGD:
    return PGD(EPS, steps=10, alpha=EPS / 4, keep_best=False)


def hand_written_epoch(loader: DataLoader) -> float:
    """The same work as ``PGDAT``'s epoch in a plain loop (timed from the first batch to the last)."""
    net = demo_cnn()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    attack = pgd10()
    net.train()
    start = time.perf_counter()
    for x, y in loader:
        x_adv = attack(net, x, y)
        loss = F.cross_entropy(net(x_adv), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def lightning_row(loader: DataLoader, repeats: int, peak: PeakRSS) -> dict:
    peak.reset()
    t = interleaved(
        {
            "hand": lambda: hand_written_epoch(loader),
            "lightning": lambda: timed_epoch(PGDAT(net=demo_cnn(), eps=EPS, train_attack=pgd10()), loader),
        },
        repeats,
    )
    return row(
        SECTION,
        f"Lightning PGD-AT epoch / hand-written loop ({len(loader)} batches of 128, demo CNN)",
        paired(t, "lightning", "hand"),
        1.03,
        peak_mib=peak.mib(),
        limit="Lightning's per-batch hooks, logging and metrics",
        hand_s=median(t["hand"]),
    )


# ---------------------------------------------------------------------------------------------- units
def attack_unit(net, x, y) -> None:
    xa = x.detach().requires_grad_(True)
    torch.autograd.grad(F.cross_entropy(net(xa), y, reduction="sum"), xa)


def forward_unit(net, x) -> None:
    with torch.no_grad():
        net(x)


def erm_unit(net, opt, x, y) -> None:
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), y).backward()
    opt.step()


#: BETA's passes per step on a CPU at batch 128: targets in chunks of BETA.auto_chunk (2: 256 rows), so
#: 4 passes of 2 targets and 1 of 1 target over the 9 wrong classes
CHUNK = BETA.auto_chunk(128, 9, torch.device("cpu"))
BETA_PASSES = (9 // CHUNK, 1 if 9 % CHUNK else 0)


def unit_fns(net: torch.nn.Module, x, y, calls: int = 5) -> dict[str, object]:
    """Functions timing ``calls`` repetitions of u and f at B rows and at BETA's chunk of CHUNK x B rows
    (uc, fc), and e (at B)."""
    xc, yc = x.repeat(CHUNK, 1, 1, 1), y.repeat(CHUNK)
    opt = torch.optim.Adam(net.parameters(), lr=0.0)  # lr 0: the weights stay as they are

    def times(fn, *args):
        def run():
            net.eval()
            for _ in range(calls):
                fn(*args)

        return run

    def train_steps():
        net.train()
        for _ in range(calls):
            erm_unit(net, opt, x, y)

    return {
        "u": times(attack_unit, net, x, y),
        "uc": times(attack_unit, net, xc, yc),
        "f": times(forward_unit, net, x),
        "fc": times(forward_unit, net, xc),
        "e": train_steps,
    }


METHODS = {
    # name: (module factory, net factory, expected cost per batch from the units)
    "ERM": (lambda net: ERM(net=net, eps=EPS), demo_cnn, lambda u: u["e"]),
    "PGD-AT": (
        lambda net: PGDAT(net=net, eps=EPS, train_attack=pgd10()),
        demo_cnn,
        lambda u: 10 * u["u"] + u["e"],
    ),
    "TRADES": (
        lambda net: TRADES(net=net, eps=EPS, train_attack=TRADESKL(EPS, steps=10, alpha=EPS / 4)),
        demo_cnn,
        lambda u: u["f"] + 10 * u["u"] + 2 * u["e"],
    ),
    "MART": (
        lambda net: MART(
            net=net, eps=EPS, train_attack=PGD(EPS, steps=10, alpha=EPS / 4, init_std=0.001, keep_best=False)
        ),
        demo_cnn,
        lambda u: 10 * u["u"] + 2 * u["e"],
    ),
    "BETA-AT": (
        lambda net: BETAAT(net=net, eps=EPS, train_attack=BETA(EPS, steps=3)),
        demo_cnn,
        lambda u: (
            u["f"]
            + BETA_PASSES[0] * (3 * u["uc"] + u["fc"])
            + BETA_PASSES[1] * (3 * u["u"] + u["f"])
            + u["e"]
        ),
    ),
    "L2NNN": (
        lambda net: L2NNN(net=net, eps=1.5, norm="2", train_attack=PGD(1.5, "2", steps=10, keep_best=False)),
        l2nnn_net,
        lambda u: u["f"] + 10 * u["u"] + 2 * u["e"],
    ),
}


def pass_rows(loader: DataLoader, repeats: int, peak: PeakRSS) -> list[dict]:
    """Epochs and unit costs timed in the same interleaved rounds; per round, the epoch's time per batch
    over the cost its units predict; the median over rounds."""
    x, y = next(iter(loader))
    calls = 5
    nets = {factory: factory() for _, factory, _ in METHODS.values()}
    fns = {}
    for factory, net in nets.items():
        for unit, fn in unit_fns(net, x, y, calls).items():
            fns[(factory.__name__, unit)] = fn
    for name, (module, factory, _) in METHODS.items():
        fns[name] = lambda m=module, f=factory: timed_epoch(m(f()), loader)[0]
    peak.reset()
    t = interleaved(fns, repeats)
    mib = peak.mib()
    out = []
    for name, (_, factory, expected) in METHODS.items():
        ratios, predicted = [], []
        for r in range(repeats):
            u = {unit: t[(factory.__name__, unit)][r] / calls for unit in ("u", "uc", "f", "fc", "e")}
            predicted.append(expected(u))
            ratios.append(t[name][r] / len(loader) / predicted[-1])
        out.append(
            row(
                SECTION,
                f"{name} epoch / its passes x unit costs",
                (median(ratios), spread(ratios)),
                1.1,
                peak_mib=mib,
                limit="work besides the passes: the attack's elementwise steps over the batch, logging",
                ms_per_batch=1000 * median(t[name]) / len(loader),
                predicted_ms=1000 * median(predicted),
            )
        )
    return out


def loader_rows(opts: argparse.Namespace, pgd_at_ms_per_batch: float, peak: PeakRSS) -> list[dict]:
    """Images/s the training pipeline delivers (the datamodule's loader, and for CIFAR-10, synthetic files
    here, the crop + flip on the device) over the images/s a PGD-AT step consumes (the row above)."""
    out = []
    with tempfile.TemporaryDirectory() as root:
        write_synthetic_cifar10(root, n_train=2560, n_test=10)
        for name, dm in (
            ("MNIST", MNIST(data_dir=opts.data_dir, batch_size=128, train_subset=5120)),
            ("CIFAR-10 + crop/flip", CIFAR10(data_dir=root, batch_size=128, val_size=0)),
        ):
            dm.setup("fit")
            loader = dm.train_dataloader()

            def epoch(dm=dm, loader=loader):
                for x, _ in loader:
                    if dm.augment:
                        random_crop_flip(x)

            peak.reset()
            t = interleaved({"epoch": epoch}, 3)
            images_per_s = len(loader.dataset) / median(t["epoch"])
            consumed = 128 / (pgd_at_ms_per_batch / 1000)
            out.append(
                row(
                    SECTION,
                    f"{name} training pipeline images/s / PGD-AT's images/s (demo CNN)",
                    images_per_s / consumed,
                    1.0,
                    peak_mib=peak.mib(),
                    higher_is_better=True,
                    limit="per-sample indexing and collation in the DataLoader",
                    note=f"{images_per_s:.0f} images/s delivered, {consumed:.0f} consumed",
                )
            )
    return out


def l2nnn_bound_row(repeats: int, quick: bool) -> dict:
    """b(W) with its gradient for the first FC layer of the L2NNN Model 3 run (512 x 6272: 64 channels x 2
    signs x 7 x 7): the full min of both Gram matrices against :func:`gram_bound`, which skips the large
    one when a row of it already exceeds the small one's r (the value and gradient are the same)."""
    w = (
        torch.randn(1, 128 if quick else 512, 6272, generator=torch.Generator().manual_seed(0)) * 0.02
    ).requires_grad_()

    def full():  # (both Gram matrices, each with only its maximising row under autograd: the old code)
        torch.minimum(_row_gram_bound(w.mT), _row_gram_bound(w)).sum().backward()

    def skipping():
        gram_bound(w).sum().backward()

    t = interleaved({"full": full, "skipping": skipping}, repeats)
    return row(
        SECTION,
        f"L2NNN b(W) + gradient, {w.shape[1]} x 6272 layer: skipping the large Gram / full",
        paired(t, "skipping", "full"),
        0.25,
        limit="the small Gram matrix (512 x 512 x 6272 multiply-adds) is computed either way",
        ms_full=1000 * median(t["full"]),
        ms_skipping=1000 * median(t["skipping"]),
    )


def rows(opts: argparse.Namespace) -> list[dict]:
    quiet()
    torch.set_num_threads(2)
    n = 384 if opts.quick else 640
    loader = mnist_loader(n, opts.data_dir, batch_size=128)
    peak = PeakRSS()
    out = [lightning_row(loader, opts.repeats, peak), *pass_rows(loader, opts.repeats, peak)]
    out.append(l2nnn_bound_row(opts.repeats, opts.quick))
    pgd_at = next(r for r in out if r["name"].startswith("PGD-AT epoch"))
    return out + loader_rows(opts, pgd_at["detail"]["ms_per_batch"], peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data_dir", default="data")
    print(table(rows(parser.parse_args())))


if __name__ == "__main__":
    main()
