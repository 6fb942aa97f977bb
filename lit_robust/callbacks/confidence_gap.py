"""Confidence gaps on the validation split, clean and adversarial, and the certified accuracy they give.

For logits z(x) (:mod:`lit_robust.diagnostics.gaps`, :func:`~lit_robust.diagnostics.gaps.gap_values`):

    g(x)   = top1(z) - top2(z)                               (gap of the prediction, >= 0)
    g_y(x) = max(0, z_y - max_{j != y} z_j)                  (gap on correct points, 0 on wrong ones)

Logged per validation epoch (all samples, or the first ``num_samples``): ``val/mean_gap``,
``val/mean_correct_gap`` and, at the evaluation attack's x', ``val/mean_gap_adv`` and
``val/mean_correct_gap_adv``. A histogram of g (clean and adversarial, ``bins`` equal bins from 0 to the
largest gap seen) goes to ``confidence_gap.csv`` in the run folder and, with a WandbLogger, to W&B.

Certified accuracy at L2 radius r (``val/certified_acc@r`` for each configured r): the fraction of points
classified correctly with certified radius > r,

    radius = g / (2 L)  (each logit L-Lipschitz, Lemma 6)   or   g / (sqrt(2) L)  (the whole vector, Lemma 1)

with L from the net's own proven certificate (``net.lipschitz_certificate()``, e.g. an L2NNN: L = 1 per
logit). Without one, no certified accuracy is logged: the product of power-iteration layer norms of
:class:`~lit_robust.callbacks.LipschitzEstimate` is an estimate (power iteration approaches each norm from
below, and for residual blocks the product is not a bound at all), so it never feeds a "certified"
column.

A method that logs the clean means and certified accuracy itself (class attribute
``logs_gap_metrics = True``, e.g. :class:`~lit_robust.methods.L2NNN`) keeps its values; this callback then
adds the adversarial means and the histograms.

DDP: per-sample values are all-gathered (torchmetrics ``CatMetric``), so means, histogram and certified
accuracy are those of the whole split (including any samples DistributedSampler repeats to even out
ranks).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence

import torch
from lightning.pytorch import LightningModule, Trainer
from torchmetrics import CatMetric

from lit_robust.attacks import Attack
from lit_robust.callbacks._common import SampledMonitor, evaluated, log_values, run_dir, wandb_run
from lit_robust.diagnostics.gaps import confidence_gap, gap_values, net_certificate
from lit_robust.errors import ConfigError
from lit_robust.validate import floats, integer


class ConfidenceGap(SampledMonitor):
    """Distribution of top1 - top2 logit gaps on validation; certified accuracy when L is proven.

    Args:
        radii: L2 radii of the certified accuracy (e.g. ``[0.5, 1.0, 2.0]``); empty list: none.
        adversarial: also measure the gaps at the evaluation attack's adversarial examples.
        attack: attack for those; default: the module's evaluation attack, whose adversarial examples the
            validation step already computed (reused, not re-run).
        num_samples: validation samples (the first ones, across ranks) to use; None: all.
        bins: histogram bins.
        use_upper_bound: removed (an error if true): a product of estimated layer norms is no proof.
        every_n_epochs: run on every n-th validation epoch of fit (always in ``validate``).
        output_dir: folder of ``confidence_gap.csv`` (default: the run's log folder).
    """

    def __init__(
        self,
        radii: Sequence[float] = (0.5, 1.0, 2.0),
        adversarial: bool = True,
        attack: Attack | None = None,
        num_samples: int | None = None,
        bins: int = 30,
        use_upper_bound: bool = False,
        every_n_epochs: int = 1,
        output_dir: str | None = None,
    ) -> None:
        super().__init__(every_n_epochs, num_samples, attack)
        self.radii = floats("ConfidenceGap.radii", radii, allow_empty=True)
        self.adversarial = bool(adversarial)
        self.bins = integer("ConfidenceGap.bins", bins)
        if use_upper_bound:
            raise ConfigError(
                "ConfidenceGap.use_upper_bound is no longer supported: the product of power-iteration layer "
                "norms under-estimates each norm and is no bound for residual nets, so it cannot certify. "
                "Certified accuracy comes only from a net's proven lipschitz_certificate() (e.g. L2NNN); "
                "LipschitzEstimate logs the product as lipschitz/layer_product_estimate"
            )
        self.output_dir = output_dir
        self.last_histogram: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._dir = run_dir(trainer, self.output_dir)
        # per-sample logits (clean, adversarial) and labels, all-gathered on compute()
        self._clean, self._adv, self._labels = CatMetric(), CatMetric(), CatMetric()

    def start(self, pl_module: LightningModule) -> None:
        for metric in (self._clean, self._adv, self._labels):
            metric.reset()
            metric.to(pl_module.device)

    def observe(self, pl_module: LightningModule, outputs, batch, n: int) -> None:
        if self.adversarial:
            out = evaluated(pl_module, outputs, batch, n, self.attack)
            self._adv.update(out["adv_logits"].float())
            logits = out["logits"]
        else:
            with torch.no_grad():
                logits = pl_module.net(batch[0][:n])
        self._clean.update(logits.float())
        self._labels.update(batch[1][:n].float())

    def lipschitz(self, pl_module: LightningModule) -> tuple[float, bool] | None:
        """``(L, per_logit)`` of the net's proven certificate, or None (then nothing is certified)."""
        certificate = net_certificate(pl_module.net)
        return None if certificate is None else (float(certificate[0]), bool(certificate[1]))

    def finish(self, trainer: Trainer, pl_module: LightningModule) -> None:
        logits, y = self._clean.compute(), self._labels.compute().long()  # all-gathered across ranks
        adv_logits = self._adv.compute() if self.adversarial else None
        gaps = {"clean": confidence_gap(logits)}
        if adv_logits is not None:
            gaps["adv"] = confidence_gap(adv_logits)
        summary = gap_values(logits, y, adv_logits, self.radii, self.lipschitz(pl_module))
        values = {f"val/{k}": v for k, v in summary.items()}
        self.last = dict(values)
        if getattr(pl_module, "logs_gap_metrics", False):  # e.g. L2NNN logs these itself, on val and test
            values = {k: v for k, v in values.items() if k.endswith("_adv")}
        log_values(pl_module, values)
        self._write_histograms(trainer, gaps)

    def _write_histograms(self, trainer: Trainer, gaps: dict[str, torch.Tensor]) -> None:
        every = torch.cat([g.float().cpu() for g in gaps.values()])
        top = float(every.max()) if every.numel() else 1.0
        edges = torch.linspace(0.0, max(top, 1e-6), self.bins + 1)  # shared by clean and adversarial
        self.last_histogram = {
            kind: (torch.histogram(g.float().cpu(), bins=edges).hist, edges) for kind, g in gaps.items()
        }
        if not trainer.is_global_zero:
            return
        self._dir.mkdir(parents=True, exist_ok=True)
        path = self._dir / "confidence_gap.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["epoch", "step", "kind", "bin_left", "bin_right", "count"])
            for kind, (hist, e) in self.last_histogram.items():
                step = (trainer.current_epoch, trainer.global_step, kind)
                for left, right, count in zip(e[:-1].tolist(), e[1:].tolist(), hist.tolist(), strict=True):
                    writer.writerow([*step, f"{left:.6g}", f"{right:.6g}", int(count)])
        run = wandb_run(trainer)
        if run is not None:
            import wandb

            media = {
                f"val/gap_histogram_{kind}": wandb.Histogram(np_histogram=(hist.numpy(), e.numpy()))
                for kind, (hist, e) in self.last_histogram.items()
            }
            run.log({**media, "trainer/global_step": trainer.global_step})
