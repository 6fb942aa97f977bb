"""Attack speed against the physical limit and against peers, and how it scales.

On real MNIST images (batch 128), for the demo CNN (SmallCNN 16-32, fc 128: per-step overhead matters) and
Madry et al.'s CNN (32-64, fc 1024: the net dominates):

- **limit**: k x (forward + backward w.r.t. the input) of the same net and batch, the least any k-step
  gradient attack can cost; ``PGD-k / limit`` for ``keep_best`` off and on;
- **peer**: the PGD loop of torchattacks 3.5.1 (random start, ``adv + alpha * sign(grad)``, clamp of the
  difference to the ball, clamp to [0, 1], mean cross-entropy), written out here at equal strength (same
  steps, step size, start distribution) since torchattacks is no dependency of ours;
- ``keep_best`` in units of one forward pass (it re-evaluates the last iterate);
- APGD-CE (100 iterations) against the official AutoAttack's ``APGDAttack`` on the same points;
- scaling: PGD-10 time per image against batch size (1 to 512), and time against steps (5 to 40).

Every ratio is the median of paired rounds in which the two sides run interleaved (``_timing.interleaved``).

    python benchmarks/bench_attacks.py [--repeats 7] [--quick]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _timing import PeakRSS, interleaved, median, median_ratio, mnist_loader, paired, quiet, row, table

from lit_robust.attacks import APGD, PGD
from lit_robust.nets import SmallCNN

SECTION = "attacks"
EPS, STEPS = 0.3, 10
ALPHA = 2.5 * EPS / STEPS
NETS = {"demo CNN": dict(channels=[16, 32], hidden=128), "Madry CNN": dict(channels=[32, 64], hidden=1024)}


def make_net(name: str, trained_on: tuple | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    net = SmallCNN(**NETS[name])
    if trained_on is not None:  # a quick ERM fit, so that attacks meet correctly classified points
        x, y = trained_on
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        for _ in range(3):
            for i in range(0, len(x), 128):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(net(x[i : i + 128]), y[i : i + 128]).backward()
                opt.step()
    return net.eval()


def limit(net, x, y, k: int) -> None:
    """k x (forward + backward w.r.t. the input): the floor of a k-step gradient attack."""
    for _ in range(k):
        xa = x.detach().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(net(xa), y, reduction="sum"), xa)


def forward(net, x) -> None:
    with torch.no_grad():
        net(x)


def peer_pgd(net, x, y, eps: float = EPS, alpha: float = ALPHA, steps: int = STEPS) -> torch.Tensor:
    """torchattacks 3.5.1's PGD (``random_start=True``), step for step."""
    adv = x.clone().detach()
    adv = (adv + torch.empty_like(adv).uniform_(-eps, eps)).clamp(0, 1).detach()
    for _ in range(steps):
        adv.requires_grad = True
        cost = F.cross_entropy(net(adv), y)
        grad = torch.autograd.grad(cost, adv, retain_graph=False, create_graph=False)[0]
        adv = adv.detach() + alpha * grad.sign()
        delta = torch.clamp(adv - x, min=-eps, max=eps)
        adv = torch.clamp(x + delta, min=0, max=1).detach()
    return adv


def pgd_rows(x, y, repeats: int, peak: PeakRSS, quick: bool = False) -> list[dict]:
    rows = []
    for threads in (2,) if quick else (2, 1):
        torch.set_num_threads(threads)
        for net_name in NETS if threads == 2 and not quick else ["demo CNN"]:
            net = make_net(net_name)
            ours = PGD(EPS, steps=STEPS, alpha=ALPHA, keep_best=False)
            ours_best = PGD(EPS, steps=STEPS, alpha=ALPHA, keep_best=True)
            peak.reset()
            t = interleaved(
                {
                    "limit": lambda net=net: limit(net, x, y, STEPS),
                    "ours": lambda net=net, a=ours: a(net, x, y),
                    "ours_keep_best": lambda net=net, a=ours_best: a(net, x, y),
                    "peer": lambda net=net: peer_pgd(net, x, y),
                    "forward": lambda net=net: forward(net, x),
                },
                repeats,
            )
            mib = peak.mib()
            where = f"{net_name}, batch {len(x)}, {threads} thread(s)"
            overhead = (
                "per-step work outside the net: input/output checks, random start, the step's add/clamp"
            )
            rows.append(
                row(
                    SECTION,
                    f"PGD-10 / limit, keep_best off ({where})",
                    paired(t, "ours", "limit"),
                    1.03,
                    limit=overhead,
                    peak_mib=mib,
                    ms=1000 * median(t["ours"]),
                    limit_ms=1000 * median(t["limit"]),
                )
            )
            rows.append(
                row(
                    SECTION,
                    f"PGD-10 / limit, keep_best on ({where})",
                    paired(t, "ours_keep_best", "limit"),
                    1.04,
                    limit=overhead + "; the per-step best-iterate bookkeeping",
                    peak_mib=mib,
                )
            )
            extra = (median(t["ours_keep_best"]) - median(t["ours"])) / median(t["forward"])
            rows.append(
                row(
                    SECTION,
                    f"keep_best cost in forward passes ({where})",
                    extra,
                    1.0,
                    unit=" fwd",
                    limit="the last iterate's own forward pass (1.0 of it) and the per-step selection "
                    "(a torch.where over the batch)",
                    peak_mib=mib,
                )
            )
            if net_name == "demo CNN":
                rows.append(
                    row(
                        SECTION,
                        f"our PGD-10 / torchattacks' PGD-10 ({where})",
                        paired(t, "ours", "peer"),
                        0.97,
                        peak_mib=mib,
                        limit="both sit near the limit: what is left to win is the peer's overhead over the "
                        f"limit ({median_ratio(t, 'peer', 'limit'):.3f}x here)",
                    )
                )
            else:
                for who in ("ours", "peer"):
                    label = "our PGD-10" if who == "ours" else "torchattacks' PGD-10"
                    rows.append(
                        row(
                            SECTION,
                            f"{label} / limit ({where})",
                            paired(t, who, "limit"),
                            1.01,
                            peak_mib=mib,
                            limit="per-step work outside the net",
                        )
                    )
    torch.set_num_threads(2)
    return rows


def apgd_row(x, y, repeats: int, peak: PeakRSS, steps: int) -> dict:
    from pyautoattack.autopgd_base import APGDAttack

    net = make_net("demo CNN", trained_on=(x, y))
    ours = APGD(EPS, steps=steps, seed=0)
    official = APGDAttack(
        net, n_iter=steps, norm="Linf", n_restarts=1, eps=EPS, seed=0, loss="ce", device="cpu"
    )
    peak.reset()
    t = interleaved({"ours": lambda: ours(net, x, y), "official": lambda: official.perturb(x, y)}, repeats)
    return row(
        SECTION,
        f"our APGD-CE / official APGD-CE ({steps} it., demo CNN, batch {len(x)})",
        paired(t, "ours", "official"),
        1.0,
        peak_mib=peak.mib(),
        limit="the per-iteration step-size and checkpoint logic",
        ms=1000 * median(t["ours"]),
    )


def scaling_rows(x_all, y_all, repeats: int, peak: PeakRSS, quick: bool) -> list[dict]:
    net = make_net("demo CNN")
    attack = PGD(EPS, steps=STEPS, alpha=ALPHA, keep_best=False)
    sizes = (1, 8, 128, 256) if quick else (1, 8, 64, 128, 512)
    peak.reset()
    fns = {b: (lambda b=b: attack(net, x_all[:b], y_all[:b])) for b in sizes}
    t = interleaved({str(b): f for b, f in fns.items()}, repeats)
    per_image = {b: 1000 * median(t[str(b)]) / b for b in sizes}
    top = sizes[-1]
    rows = [
        row(
            SECTION,
            f"PGD-10 ms per image at batch {top} / at batch 128",
            per_image[top] / per_image[128],
            1.1,
            peak_mib=peak.mib(),
            limit="memory traffic of a larger batch",
            note="ms per image: " + ", ".join(f"batch {b}: {v:.3f}" for b, v in per_image.items()),
            ms_per_image=per_image,
        )
    ]
    steps = (5, 10, 20) if quick else (5, 10, 20, 40)
    attacks = {s: PGD(EPS, steps=s, keep_best=False) for s in steps}
    x, y = x_all[:128], y_all[:128]
    peak.reset()
    t = interleaved({str(s): (lambda s=s: attacks[s](net, x, y)) for s in steps}, repeats)
    per_step = {s: 1000 * median(t[str(s)]) / s for s in steps}
    rows.append(
        row(
            SECTION,
            f"PGD time per step at {steps[-1]} steps / at 5 steps (linear in steps)",
            per_step[steps[-1]] / per_step[5],
            1.1,
            peak_mib=peak.mib(),
            limit="per-call fixed costs",
            note="ms per step: " + ", ".join(f"{s}: {v:.2f}" for s, v in per_step.items()),
            ms_per_step=per_step,
        )
    )
    return rows


def rows(opts: argparse.Namespace) -> list[dict]:
    quiet()
    loader = mnist_loader(512, opts.data_dir, batch_size=512)
    x_all, y_all = next(iter(loader))
    x, y = x_all[:128], y_all[:128]
    peak = PeakRSS()
    out = pgd_rows(x, y, opts.repeats, peak, opts.quick)
    out.append(apgd_row(x, y, opts.repeats, peak, steps=20 if opts.quick else 100))
    out += scaling_rows(x_all, y_all, opts.repeats, peak, opts.quick)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data_dir", default="data")
    print(table(rows(parser.parse_args())))


if __name__ == "__main__":
    main()
