"""Adversarial training with EntropySGD (Kanai et al., "Smoothness Analysis of Adversarial Training"):
PGD-AT or TRADES, optionally with AWP, optimised by first- or second-order EntropySGD.

    min_theta -F(theta) = -log int exp( -L_eps(theta') - gamma/2 ||theta - theta'||^2 ) dtheta'
    L_eps(theta') = mean_i max_{||delta|| <= eps} l(x_i + delta, y_i, theta' [+ v_AWP])

l is CE at the PGD output (``inner_loss="pgd_ce"``) or the TRADES loss CE(f(x), y) + beta KL(f(x) || f(x'))
at the TRADES-KL output (``"trades"``). :class:`~lit_robust.optim.EntropySGD` runs the SGLD chain: each
Langevin step calls this module's closure, which takes the NEXT mini-batch, attacks it at the current
sample theta', computes the AWP perturbation there (``awp_gamma > 0``) and back-propagates the loss at
theta' + v. With any other optimiser (SGD, Adam) the closure runs once per step: plain PGD-AT / TRADES
(+AWP), which is how :class:`AWPAT` gives the "AWP" rows.

Counting (manual optimisation; ``training_step`` takes Lightning's ``dataloader_iter``):

- an epoch is one pass over the training data (ambiguity A5): L mini-batches per outer step, so
  ceil(batches / L) outer steps per epoch; the last chain of an epoch is closed early with the batches
  left (A7), so validation and checkpoints always see theta, never a Langevin sample;
- ``trainer.global_step`` counts optimiser steps: one per outer step (L batches) with EntropySGD, one
  per batch in plain phases. ``max_steps`` and step-based callbacks (``EpsWarmup.warmup_steps``) count
  these; ``max_epochs`` counts passes over the data;
- LR schedulers are stepped here: ``scheduler_interval="epoch"`` once per epoch (milestones are in
  epochs of data; ReduceLROnPlateau gets ``val/robust_acc``), ``"step"`` once per optimiser step.
  They change the outer lr eta only; eta' is fixed unless ``EntropySGD.sgld_lr_follows_lr`` (A9).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities.model_helpers import is_overridden

from lit_robust.attacks import PGD, TRADESKL, Attack
from lit_robust.errors import ConfigError
from lit_robust.losses import cross_entropy, trades
from lit_robust.methods.base import RobustClassifier
from lit_robust.optim import AWP, EntropySGD
from lit_robust.validate import integer, non_negative

INNER_LOSSES = ("pgd_ce", "trades")
# Lightning flags every training_step(dataloader_iter) as experimental; this module relies on it knowingly
warnings.filterwarnings("ignore", message="Found `dataloader_iter` argument in the `training_step`")
warnings.filterwarnings("ignore", message="You are using the `dataloader_iter` step flavor")


def _entropy_sgd(params) -> EntropySGD:
    return EntropySGD(params)


def _sgd(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)


class EntropySGDAT(RobustClassifier):
    """AT / AT+AWP / TRADES / TRADES+AWP with EntropySGD (1st or 2nd order: ``EntropySGD.order``).

    Args:
        inner_loss: ``"pgd_ce"`` (PGD-AT) or ``"trades"`` (TRADES, weight ``beta``).
        beta: TRADES KL weight (6, ambiguity A8).
        train_attack: attack at theta'. Default: PGD-10 step eps/4, random start, last iterate (pgd_ce);
            TRADES-KL 10 steps of eps/4 (trades).
        awp_gamma: gamma_A of :class:`~lit_robust.optim.AWP`; 0 turns AWP off.
        warmup_epochs: first epochs with neither EnSGD nor AWP: plain SGD steps of the optimiser (SVHN 5,
            TRADES+AWP 10; A12).
        awp_warmup_epochs: epochs after ``warmup_epochs`` in which AWP stays off while the optimiser
            already runs as configured (EnSGD chains or plain steps), like the ``awp_warmup`` of Wu et al.'s
            code. The CPU-sized MNIST AWP configs use 1: AWP from the first step keeps a fresh net on the
            constant-prediction plateau (docs/entropysgd_table.md).
        ensgd_epochs: EnSGD only for this many epochs after the warm-up, then plain SGD (AWP stays): the
            "(tuned)" run, 140 after a 10-epoch warm-up. None: to the end.
        optimizer: default :class:`~lit_robust.optim.EntropySGD` with the paper's settings (lr 0.1,
            gamma 0.03, L 20, eta' 0.1, eps_E 1e-4, alpha 0.75, momentum 0.9 Nesterov, wd 5e-4). Any other
            optimiser trains plain AT / TRADES (+AWP) with one batch per step.
        **kwargs: see :class:`~lit_robust.methods.base.RobustClassifier` (net, eps, norm, eval_attack,
            lr_scheduler, scheduler_interval).
    """

    def __init__(
        self,
        inner_loss: str = "pgd_ce",
        beta: float = 6.0,
        train_attack: Attack | None = None,
        awp_gamma: float = 0.0,
        warmup_epochs: int = 0,
        awp_warmup_epochs: int = 0,
        ensgd_epochs: int | None = None,
        optimizer: OptimizerCallable = _entropy_sgd,
        **kwargs,
    ) -> None:
        super().__init__(optimizer=optimizer, **kwargs)
        if inner_loss not in INNER_LOSSES:
            raise ConfigError(f"model.inner_loss must be one of {list(INNER_LOSSES)}, got {inner_loss!r}")
        self.automatic_optimization = False
        if self.nonfinite == "skip":
            raise ConfigError(
                f"model.nonfinite=skip is not available for {type(self).__name__}: an optimiser step spans "
                "several batches (an SGLD chain), which cannot drop one; use nonfinite=stop"
            )
        self._batch_size = 1  # of the last training mini-batch, for self.log
        self.inner_loss = inner_loss
        self.beta = non_negative("model.beta", beta)
        self.awp = AWP(awp_gamma) if non_negative("model.awp_gamma", awp_gamma) > 0 else None
        self.warmup_epochs = integer("model.warmup_epochs", warmup_epochs, 0)
        self.awp_warmup_epochs = integer("model.awp_warmup_epochs", awp_warmup_epochs, 0)
        self.ensgd_epochs = integer("model.ensgd_epochs", ensgd_epochs, 0, optional=True)
        if inner_loss == "trades":
            default: Attack = TRADESKL(steps=10, alpha=self.eps / 4)
        else:
            default = PGD(steps=10, alpha=self.eps / 4, keep_best=False)
        self.train_attack = self.bind_attack(train_attack if train_attack is not None else default)

    # ------------------------------------------------------------------ loss
    def adversarial_loss(
        self, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, log: bool = True
    ) -> torch.Tensor:
        """Mean loss at the current weights for fixed adversarial inputs: CE(f(x'), y) or TRADES."""
        logits_adv = self(x_adv)
        if log:
            self.log_accuracy("train", "robust", logits_adv, y)
        if self.inner_loss == "pgd_ce":
            return cross_entropy(logits_adv, y).mean()
        logits = self(x)
        if log:
            self.log_accuracy("train", "clean", logits, y)
        return trades(logits, logits_adv, y, self.beta).mean()

    def training_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Attack at the current weights, then :meth:`adversarial_loss` (no AWP here; the training step
        uses :meth:`minibatch_backward`)."""
        x, y = batch
        return self.adversarial_loss(x, self.train_attack(self.net, x, y), y)

    def minibatch_backward(self, batch: tuple[torch.Tensor, torch.Tensor], awp: bool) -> torch.Tensor:
        """One closure call's work: attack at theta', AWP perturbation v at theta' (if on), gradient of the
        loss at theta' + v into ``.grad``; returns the detached loss. The weights end at theta'. A
        non-finite loss stops the fit (``nonfinite="skip"`` is not possible inside a chain)."""
        x, y = batch
        x_adv = self.train_attack(self.net, x, y)
        v = None
        if awp and self.awp is not None:
            v = self.awp.perturbation(self.net, lambda: self.adversarial_loss(x, x_adv, y, log=False))
        with AWP.perturbed(v):
            loss = self.adversarial_loss(x, x_adv, y)
            if not torch.isfinite(loss):  # before the backward: no NaN reaches the optimiser
                self.on_nonfinite(f"the training loss is {float(loss.detach())}")
            self.manual_backward(loss)
        return loss.detach()

    # ------------------------------------------------------------------ loop
    def _phase(self) -> tuple[bool, bool]:
        """(EnSGD on, AWP on) in the current epoch."""
        epoch = self.current_epoch
        if epoch < self.warmup_epochs:
            return False, False
        chain = self.ensgd_epochs is None or epoch < self.warmup_epochs + self.ensgd_epochs
        return chain, epoch >= self.warmup_epochs + self.awp_warmup_epochs

    def training_step(self, dataloader_iter: Iterator) -> torch.Tensor | None:
        opt = self.optimizers()
        ensgd = isinstance(opt.optimizer, EntropySGD)
        chain, awp = self._phase()
        losses: list[torch.Tensor] = []
        try:  # no batch left, no step: Lightning's count of batches is off by L - 1 per step after a
            pending = [next(dataloader_iter)]  # mid-epoch resume, so it may call once more at the end
        except StopIteration:
            return None

        def closure() -> torch.Tensor | None:
            opt.zero_grad()  # before the data check: an optimiser must never see stale gradients
            try:
                batch, _, _ = pending.pop() if pending else next(dataloader_iter)
            except StopIteration:
                return None
            batch = self._to_device(batch)
            self._batch_size = len(batch[1])
            losses.append(self.minibatch_backward(batch, awp))
            return losses[-1]

        if ensgd:
            opt.step(closure=closure, plain=not chain)
            if chain:
                self._log_chain(opt.optimizer.last_stats)
        else:
            opt.step(closure=closure)
        if not losses:
            return None
        loss = torch.stack(losses).mean()
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(losses))
        sched = self.lr_schedulers()
        if sched is not None and self.scheduler_interval == "step":
            sched.step()
        return loss

    def _to_device(self, batch):
        """What Lightning's loop does to a batch it hands out itself: dtype conversion and the
        ``on_before_batch_transfer`` / ``transfer_batch_to_device`` / ``on_after_batch_transfer`` hooks of
        the module and the datamodule (e.g. on-device augmentation). With a ``dataloader_iter`` it is ours."""
        batch = self.trainer.precision_plugin.convert_input(batch)
        dm = getattr(self.trainer, "datamodule", None)
        owner = dm if dm is not None and is_overridden("on_before_batch_transfer", dm) else self
        batch = owner.on_before_batch_transfer(batch, 0)  # the datamodule's hook wins, as in Lightning
        return self.trainer.strategy.batch_to_device(batch, dataloader_idx=0)

    def log(self, name: str, value, *args, **kwargs) -> None:
        """``LightningModule.log``; while training, a missing ``batch_size`` is the last mini-batch's
        (Lightning cannot infer it when ``training_step`` takes a ``dataloader_iter``, and callbacks such as
        EpsWarmup log without one)."""
        if kwargs.get("batch_size") is None and self._trainer is not None and self.trainer.training:
            kwargs["batch_size"] = self._batch_size
        super().log(name, value, *args, **kwargs)

    def _log_chain(self, stats: dict) -> None:
        keys = ("drift", "chain_dist", "steps", "var_max", "h_max", "clamped", "lipschitz_proxy")
        for key in keys:
            if key in stats:
                self.log(
                    f"ensgd/{key}",
                    torch.as_tensor(stats[key], dtype=torch.float32),
                    on_step=True,
                    batch_size=1,
                )

    def on_train_epoch_end(self) -> None:
        sched = self.lr_schedulers()
        if sched is None or self.scheduler_interval != "epoch":
            return
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            metric = self.trainer.callback_metrics.get(self.monitor)
            if metric is not None:
                sched.step(metric)
        else:
            sched.step()

    def on_fit_start(self) -> None:
        opt = self.optimizers().optimizer
        if not isinstance(opt, EntropySGD):
            return
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            raise ConfigError(
                "EntropySGD calls its closure L times per step, which a GradScaler (trainer.precision "
                "16-mixed) does not support: use trainer.precision 32-true or bf16-mixed"
            )
        # every DDP rank must draw the same thermal noise, so that theta' stays the same on every rank
        opt.seed = int(self.trainer.strategy.broadcast(opt.seed, src=0))


class AWPAT(EntropySGDAT):
    """AWP (Wu et al. 2020) on PGD-AT or TRADES with a plain optimiser: :class:`EntropySGDAT` with
    ``awp_gamma`` 0.01 and SGD (lr 0.1, momentum 0.9, wd 5e-4) by default. Same arguments."""

    def __init__(self, awp_gamma: float = 0.01, optimizer: OptimizerCallable = _sgd, **kwargs) -> None:
        super().__init__(awp_gamma=awp_gamma, optimizer=optimizer, **kwargs)
