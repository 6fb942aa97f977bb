"""RobustClassifier: the LightningModule every method derives from.

It owns everything but the training loss: optimiser and scheduler from the config, torchmetrics for
clean and robust accuracy on train/val/test, the evaluation attack (PGD-20 by default, stronger than any
training attack), the checkpoint monitor on the held-out validation split, and an early check that the
net accepts the datamodule's inputs. A method overrides one hook::

    def training_loss(self, batch) -> torch.Tensor
"""

from __future__ import annotations

import csv
import math
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torchmetrics import MaxMetric, MeanMetric

from lit_robust.attacks import PGD, Attack
from lit_robust.attacks.base import PRECISIONS
from lit_robust.attacks.threat import canonical_norm
from lit_robust.callbacks.mid_epoch_checkpoint import MidEpochCheckpoint
from lit_robust.callbacks.preemption import Preemption
from lit_robust.checkpoint import check_fits, load_net, net_weights, rng_states, set_rng_states
from lit_robust.checkpoint_io import AtomicCheckpointIO
from lit_robust.errors import ConfigError, NonFiniteAttackError, TrainingDivergedError
from lit_robust.validate import choice, flag, integer, positive, radius

STAGES = ("train", "val", "test")
KINDS = ("clean", "robust")


def _adam(params) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-3)


def robust_predictions(clean_logits: torch.Tensor, adv_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Predictions whose accuracy is robust accuracy: the adversarial prediction where the clean one is
    correct, the (wrong) clean one elsewhere, so a sample counts only if it is correct clean AND under
    attack (an attack that "fixes" a wrong clean prediction never raises robust accuracy):

        robust_i = [argmax f(x_i) = y_i] * [argmax f(x'_i) = y_i]
    """
    clean_pred = clean_logits.argmax(dim=1)
    return torch.where(clean_pred == y, adv_logits.argmax(dim=1), clean_pred)


class RobustClassifier(LightningModule):
    """Base module: ``net`` maps [0,1] images to logits; methods define ``training_loss``.

    Args:
        net: the classifier (any ``nn.Module`` from ``lit_robust.nets`` or your own; it takes inputs in
            [0,1] and normalises internally if needed).
        eps: radius of the threat model (0.3 for MNIST L_inf, 8/255 for CIFAR-10 L_inf).
        norm: threat model, ``"inf"`` or ``"2"``.
        eval_attack: attack for validation and test robust accuracy. Default: PGD-20 with step
            2.5*eps/20 and a random start. Attacks that leave ``eps``/``norm`` unset use the module's.
        optimizer: optimiser factory, e.g. ``class_path: torch.optim.SGD`` with ``init_args: {lr: 0.1}``.
            Default Adam(lr=1e-3).
        lr_scheduler: optional learning-rate scheduler factory, e.g.
            ``torch.optim.lr_scheduler.MultiStepLR``.
        scheduler_interval: when the scheduler steps: ``"epoch"`` or ``"step"``.
        nonfinite: what a non-finite training loss does: ``"stop"`` the fit with a
            :class:`~lit_robust.errors.TrainingDivergedError` (step, method, value, last good checkpoint;
            no checkpoint is written from the diverged weights), or ``"skip"`` the batch (no update; the
            count is logged as ``train/skipped_batches`` and reported at the end of fit).
        checkpoint_every_n_steps: also rewrite ``last.ckpt`` every this many optimiser steps (with the
            data loader's position and the random streams: a fit killed mid-epoch resumes exactly).
        checkpoint_every_minutes: also rewrite ``last.ckpt`` when this many minutes of training passed
            since the last such write. Either or both; ``last.ckpt`` is always rewritten after validation.
        predict_adversarial: ``predict`` also writes the prediction at the evaluation attack's point.
        init_from: start the net from these weights (fine-tuning): a checkpoint of any method of ours, a
            plain or ``module.``-prefixed state dict (RobustBench), a ``.safetensors`` file or an export
            folder. Unlike ``--ckpt_path`` it restores no optimiser or loop state.
        attack_precision: precision of the model's forward/backward inside this method's attacks
            (training, validation, test): ``"auto"`` follows the trainer (bf16 autocast under
            ``trainer.precision=bf16-mixed``), ``"fp32"`` opts out. The perturbation, projection and
            loss reduction are fp32 either way; ``evaluate`` runs outside autocast (fp32).
        channels_last: keep the net's 4-D weights and inputs in ``torch.channels_last`` memory format
            (faster convolutions on GPUs with tensor cores; the weights and their checkpoint keys are
            unchanged).
        compile: ``torch.compile`` the net (in place: state dict keys unchanged), ``true`` or the keyword
            arguments of ``torch.compile`` (e.g. ``{mode: max-autotune}``). Attacks take input gradients
            through the compiled net.
    """

    #: metric the checkpoint callback and plateau schedulers monitor (always on the validation split)
    monitor: str = "val/robust_acc"

    def __init__(
        self,
        net: nn.Module,
        eps: float = 0.3,
        norm: str = "inf",
        eval_attack: Attack | None = None,
        optimizer: OptimizerCallable = _adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
        nonfinite: str = "stop",
        checkpoint_every_n_steps: int | None = None,
        checkpoint_every_minutes: float | None = None,
        predict_adversarial: bool = False,
        init_from: str | None = None,
        attack_precision: str = "auto",
        channels_last: bool = False,
        compile: bool | dict = False,
    ) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise ConfigError(f"model.net must be a torch.nn.Module, got {type(net).__name__}")
        if scheduler_interval not in ("epoch", "step"):
            raise ConfigError(
                f"model.scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}"
            )
        # objects (net, attacks, factories) stay out of the checkpoint's hyperparameters: a checkpoint holds
        # tensors and plain values only, so it loads with torch.load(weights_only=True)
        self.save_hyperparameters(ignore=["net", "eval_attack", "train_attack", "optimizer", "lr_scheduler"])
        self.net = net
        self.eps = radius("model.eps", eps)
        self.norm = canonical_norm(norm)
        self.attack_precision = choice("model.attack_precision", attack_precision, PRECISIONS)
        self.eval_attack = self.bind_attack(eval_attack if eval_attack is not None else PGD(steps=20))
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.scheduler_interval = scheduler_interval
        self.nonfinite = choice("model.nonfinite", nonfinite, ("stop", "skip"))
        self.skipped_batches = 0
        self.predict_adversarial = flag("model.predict_adversarial", predict_adversarial)
        self._predictions: list[dict[str, torch.Tensor]] = []
        self.checkpoint_every_n_steps = integer(
            "model.checkpoint_every_n_steps", checkpoint_every_n_steps, 1, optional=True
        )
        self.checkpoint_every_minutes = positive(
            "model.checkpoint_every_minutes", checkpoint_every_minutes, optional=True
        )
        self._resume_rng: dict | None = None
        #: the net's {"class_path", "init_args"} when the CLI built it (recorded in checkpoints and exports)
        self.net_config: dict | None = None
        # accuracy = mean of per-sample correctness, one metric per stage and kind, made here (not on first
        # use) so that a fresh and a loaded module have the same modules and state_dict keys
        self.init_from = init_from
        if init_from is not None:
            load_net(self.net, init_from)
        self.channels_last = flag("model.channels_last", channels_last)
        if self.channels_last:
            use_channels_last(self.net)
        if not isinstance(compile, bool | dict):
            raise ConfigError(
                f"model.compile must be true, false or torch.compile's keyword arguments, got {compile!r}"
            )
        self.compile_options = {} if compile is True else compile or None
        self._compiled = False
        self.metrics = nn.ModuleDict({f"{s}_{k}": MeanMetric() for s in STAGES for k in KINDS})
        self.best_robust = MaxMetric()
        self.best_robust.persistent(True)  # in the checkpoint: a resumed run keeps its best

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse, with one error naming ``model.net``, a checkpoint whose net weights do not fit the
        configured net (``fit``/``validate``/``test --ckpt_path`` through Lightning, and ``evaluate``)."""
        check_fits(self.net, net_weights(checkpoint), "--ckpt_path")
        writer = checkpoint.get("method")
        fitting = self._trainer is not None and self.trainer.state.fn == "fit"
        if fitting and writer is not None and writer != type(self).__name__:
            raise ConfigError(
                f"--ckpt_path was written by a {writer} fit, and this is a {type(self).__name__} fit: resume "
                f"it with its own config (--model {writer}), or start this method from its weights "
                "(evaluate and test take any checkpoint)"
            )
        self._resume_rng = checkpoint.get("rng_states")

    def bind_attack(self, attack: Attack) -> Attack:
        """Give an attack whose ``eps``/``norm`` are left open this module's threat model, and this
        module's ``attack_precision``."""
        if not isinstance(attack, Attack):
            raise ConfigError(
                f"attacks must be lit_robust.attacks.Attack instances, got {type(attack).__name__}"
            )
        attack.precision = self.attack_precision
        return attack.bind(self.eps, self.norm)

    # ------------------------------------------------------------------ model
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The method's loss on one training batch. Override this (and only this) in a method."""
        raise NotImplementedError(f"{type(self).__name__} must implement training_loss(batch)")

    def log_accuracy(self, stage: str, kind: str, scores: torch.Tensor, y: torch.Tensor) -> None:
        """Update and log ``{stage}/{kind}_acc`` (kind: clean or robust) from logits (N, K) or integer
        predictions (N,): the fraction of samples with prediction == y."""
        pred = scores.argmax(dim=1) if scores.dim() == 2 else scores
        key = f"{stage}_{kind}"
        metric = self.metrics[key]
        metric((pred.detach() == y).float())
        self.log(
            f"{stage}/{kind}_acc",
            metric,
            on_step=stage == "train",
            on_epoch=True,
            prog_bar=stage != "train",
            metric_attribute=f"metrics.{key}",
        )

    # ------------------------------------------------------------------ loops
    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        self._loss_terms: dict[str, torch.Tensor] = {}
        try:
            loss = self.training_loss(batch)
        except NonFiniteAttackError as err:  # never train on them: stop or skip, as for a NaN loss
            return self.on_nonfinite(str(err))
        if not torch.isfinite(loss).all():
            return self.on_nonfinite(f"the training loss is {float(loss.detach().float().mean())}")
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def loss_from_terms(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """``sum_k mean_i terms[k]_i``: the loss of a method whose loss has named per-sample terms (TRADES'
        natural and robust parts); each mean is logged as ``train/loss_<k>`` and named in the message of a
        diverged step."""
        means = {name: value.mean() for name, value in terms.items()}
        for name, value in means.items():
            self.log(f"train/loss_{name}", value, on_step=False, on_epoch=True)
        self._loss_terms = {name: value.detach() for name, value in means.items()}
        return sum(means.values())  # type: ignore[return-value]

    def on_before_optimizer_step(self, optimizer) -> None:
        """A non-finite gradient (a finite loss can still give one) stops the fit or skips the step, as
        ``nonfinite`` says: skipping drops every gradient, so the optimiser leaves the weights alone."""
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if grads and not torch.stack([g.isfinite().all() for g in grads]).all():
            bad = next(
                n for n, p in self.named_parameters() if p.grad is not None and not p.grad.isfinite().all()
            )
            self.on_nonfinite(f"the gradient of {bad} is not finite")
            for p in self.parameters():
                p.grad = None

    def on_nonfinite(self, what: str) -> None:
        """Stop (``nonfinite="stop"``) or skip the batch (``"skip"``: returning None skips the update)."""
        if self.nonfinite == "skip":
            self.skipped_batches += 1
            self.log("train/skipped_batches", float(self.skipped_batches), on_step=True, on_epoch=False)
            return None
        saved = [cb.best_model_path for cb in self.trainer.checkpoint_callbacks if cb.best_model_path]
        last = next((p for p in saved if p.endswith("last.ckpt")), saved[0] if saved else "")
        terms = getattr(self, "_loss_terms", {})
        parts = f" (terms: {', '.join(f'{k} {float(v):.6g}' for k, v in terms.items())})" if terms else ""
        raise TrainingDivergedError(
            f"{type(self).__name__}: {what}{parts} at global step {self.global_step} "
            f"(epoch {self.current_epoch}); stopped before the update. The last good "
            f"checkpoint is {last or 'none (none was written yet)'} and is kept. Lower the learning rate, "
            "or set model.nonfinite=skip to skip such batches"
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Carry every global random stream (attack random starts use torch's) for an exact resume, and
        the W&B run id (``--ckpt_path last|auto`` resumes that run); flush the loggers, so that the
        metrics up to this checkpoint are on disk if the job is killed."""
        checkpoint["rng_states"] = rng_states()
        checkpoint["method"] = type(self).__name__
        if self.net_config is not None:
            checkpoint["net_config"] = self.net_config
        for logger in self.loggers:
            if type(logger).__name__ == "WandbLogger":
                checkpoint["wandb_id"] = logger.version
            logger.save()

    def on_fit_start(self) -> None:
        self._fit_started = time.perf_counter()

    def on_fit_end(self) -> None:
        """Warn about skipped batches; print the summary: best validation epoch, checkpoint, time, and
        the command that evaluates the run."""
        if self.skipped_batches:
            rank_zero_warn(
                f"{type(self).__name__}: {self.skipped_batches} batches with a non-finite loss skipped"
            )
        best = getattr(self, "_best_epoch", None)
        seconds = time.perf_counter() - getattr(self, "_fit_started", time.perf_counter())
        took = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
        callback = self.trainer.checkpoint_callback
        path = getattr(callback, "best_model_path", "") or "(no checkpoint written)"
        lines = [f"{type(self).__name__} fit finished in {took}, {self.trainer.global_step} steps"]
        if best is not None:
            epoch, robust, clean = best
            lines.append(f"best validation epoch {epoch}: robust accuracy {robust:.2%}, clean {clean:.2%}")
        lines.append(f"checkpoint: {path}")
        if self.trainer.logger is not None and self.trainer.log_dir:
            lines.append(f"evaluate it: python -m lit_robust evaluate {self.trainer.log_dir}")
        rank_zero_info("\n".join(lines))

    def _evaluation_step(self, batch, stage: str) -> dict[str, torch.Tensor]:
        """Clean and attacked metrics of one batch. Returns the batch's ``x``, ``y``, clean ``logits``,
        ``x_adv`` (the evaluation attack's) and ``adv_logits``, detached: Lightning hands them to the
        callbacks as ``outputs``, so monitors reuse this one attack instead of re-running it."""
        x, y = batch
        with torch.no_grad():
            logits = self(x)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), on_epoch=True, sync_dist=True)
        self.log_accuracy(stage, "clean", logits, y)
        self.log_evaluation_extras(stage, logits, y)
        x_adv = self.eval_attack(self.net, x, y)
        with torch.no_grad():
            adv_logits = self(x_adv)
        self.log(f"{stage}/robust_loss", F.cross_entropy(adv_logits, y), on_epoch=True, sync_dist=True)
        # robust accuracy counts a sample only if it is correct clean AND under attack
        self.log_accuracy(stage, "robust", robust_predictions(logits, adv_logits, y), y)
        return {"x": x, "y": y, "logits": logits, "x_adv": x_adv.detach(), "adv_logits": adv_logits}

    def paired_logits(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(f(x), f(x'), y)`` for x' = ``self.train_attack``'s output on the batch, with train clean and
        robust (clean-and-adversarial) accuracy logged: the step of the paired losses (TRADES, MART)."""
        x, y = batch
        x_adv = self.train_attack(self.net, x, y)
        logits, logits_adv = self(x), self(x_adv)
        self.log_accuracy("train", "clean", logits, y)
        self.log_accuracy("train", "robust", robust_predictions(logits, logits_adv, y), y)
        return logits, logits_adv, y

    def log_evaluation_extras(self, stage: str, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Hook for a method's own validation/test metrics from the clean logits (default: none)."""

    def validation_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._evaluation_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._evaluation_step(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """Label, prediction and (``predict_adversarial``) the prediction under the evaluation attack."""
        x, y = batch
        with torch.no_grad():
            out = {"label": y, "prediction": self(x).argmax(1)}
        if self.predict_adversarial:
            with torch.no_grad():
                out["adversarial_prediction"] = self(self.eval_attack(self.net, x, y)).argmax(1)
        self._predictions.append({k: v.detach().cpu() for k, v in out.items()})
        return out

    def on_predict_epoch_end(self) -> None:
        """Write ``predictions.csv`` (index, label, prediction[, adversarial_prediction]) into the run's
        folder (the evaluated run's, for a checkpoint of ours)."""
        if not self._predictions:
            return
        columns = {k: torch.cat([p[k] for p in self._predictions]).tolist() for k in self._predictions[0]}
        self._predictions = []
        folder = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "predictions.csv"
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", *columns])
            writer.writerows([i, *row] for i, row in enumerate(zip(*columns.values(), strict=True)))
        rank_zero_info(f"wrote {path}")

    def on_train_start(self) -> None:
        """After a resume, put back the random streams the checkpoint carries. This runs after the sanity
        check (which Lightning isolates) and before the first batch is fetched, transferred and augmented;
        the loaders keep their own generators, so nothing draws in between in either run."""
        if self._resume_rng is not None:
            set_rng_states(self._resume_rng)
            self._resume_rng = None

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self.metrics["val_robust"].update_called:
            return
        robust = self.metrics["val_robust"].compute()
        previous = float(self.best_robust.compute()) if self.best_robust.update_called else float("-inf")
        if float(robust) > previous:  # the epoch the checkpoint monitor keeps (ties keep the first)
            clean = self.metrics["val_clean"].compute()
            self._best_epoch = (self.current_epoch, float(robust), float(clean))
        self.best_robust(robust)
        self.log("val/robust_acc_best", self.best_robust.compute(), sync_dist=True)

    # ------------------------------------------------------------------ set-up
    def setup(self, stage: str) -> None:
        """Write checkpoints atomically (:class:`~lit_robust.checkpoint_io.AtomicCheckpointIO`, unless the
        trainer was given its own writer), and fail early, naming the fields, if the net cannot take the
        datamodule's inputs."""
        if self._trainer is not None and type(self.trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            self.trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        self.check_net_fits(dm)
        self.compile_net()  # after the check: its batch of 2 is not what gets compiled

    def check_net_fits(self, dm) -> None:
        """Fail early, naming the fields, if the net cannot take the datamodule's inputs (or gives the
        wrong number of classes); warn when the threat model is vacuous for them."""
        shape, classes = getattr(dm, "input_shape", None), getattr(dm, "num_classes", None)
        if shape is None:
            return
        where = f"data {type(dm).__name__} gives inputs of shape {tuple(shape)}"
        was_training = self.net.training
        self.net.eval()
        try:
            with torch.no_grad():
                out = self.net(torch.zeros(2, *shape, device=self.device))
        except ConfigError as err:
            raise ConfigError(
                f"model.net ({type(self.net).__name__}) does not fit the data: {where}; {err}"
            ) from None
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise ConfigError(
                f"model.net ({type(self.net).__name__}) cannot take the data's inputs: {where}; "
                f"torch says: {first}"
            ) from None
        finally:
            self.net.train(was_training)
        if classes is not None and tuple(out.shape) != (2, classes):
            raise ConfigError(
                f"model.net ({type(self.net).__name__}) returns outputs of shape {tuple(out.shape[1:])} per "
                f"sample but data {type(dm).__name__} has {classes} classes: set the net's num_classes"
            )
        warn_if_vacuous(self.eps, self.norm, shape)

    def compile_net(self) -> None:
        """``torch.compile`` the net in place once, when ``compile`` is set."""
        if self.compile_options is not None and not self._compiled:
            self.net.compile(**self.compile_options)
            self._compiled = True

    def configure_optimizers(self):
        try:
            optimizer = self.optimizer_factory(self.parameters())
        except (ValueError, TypeError) as err:  # torch's own checks: "Invalid learning rate: -1.0"
            raise ConfigError(f"model.optimizer: {err}") from None
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "interval": self.scheduler_interval,
                "monitor": self.monitor,
            },
        }

    def configure_callbacks(self) -> list[Callback]:
        """Checkpoint on ``self.monitor`` (validation split): ``best-epochXXX.ckpt`` (the trainer's
        ``checkpoint_callback``) and ``last.ckpt``, rewritten after every validation and, when
        ``checkpoint_every_n_steps``/``checkpoint_every_minutes`` are set, during the epoch too.

        ``last.ckpt`` has its own callback: Lightning's ``save_last=True`` only writes it when a best
        checkpoint is saved, so it would be a copy of the best one, not the last epoch. A
        ``ModelCheckpoint`` with its own ``monitor`` in the trainer's callbacks is left alone. Also the
        :class:`~lit_robust.callbacks.Preemption` handler (unless the trainer has one)."""
        callbacks: list[Callback] = []
        if not any(isinstance(cb, Preemption) for cb in self.trainer.callbacks):
            callbacks.append(Preemption())
        existing = self.trainer.checkpoint_callbacks
        if not existing or any(cb.monitor is not None for cb in existing):
            return callbacks
        last = {"monitor": None, "save_top_k": 1, "filename": "last", "enable_version_counter": False}
        callbacks += [
            ModelCheckpoint(
                monitor=self.monitor,
                mode="max",
                filename="best-epoch{epoch:03d}",
                auto_insert_metric_name=False,
            ),
            ModelCheckpoint(**last),
        ]
        if self.checkpoint_every_n_steps:
            callbacks.append(MidEpochCheckpoint(**last, every_n_train_steps=self.checkpoint_every_n_steps))
        if self.checkpoint_every_minutes:
            interval = timedelta(minutes=self.checkpoint_every_minutes)
            callbacks.append(MidEpochCheckpoint(**last, train_time_interval=interval))
        return callbacks


def _to_channels_last(module: nn.Module, args: tuple) -> tuple:
    x = args[0] if args else None
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return (x.contiguous(memory_format=torch.channels_last), *args[1:])
    return args


def use_channels_last(net: nn.Module) -> None:
    """Put ``net``'s 4-D weights in channels_last format and make it take its 4-D inputs so too (a no-op
    for inputs already in that format, e.g. an attack's iterates after the first step)."""
    net.to(memory_format=torch.channels_last)
    net.register_forward_pre_hook(_to_channels_last)


def warn_if_vacuous(eps: float, norm: str, shape: tuple[int, ...]) -> None:
    """Warn, naming the value, when the threat model leaves no constraint: an L_inf ball of radius >= 1
    holds all of [0, 1]^d, and an L_2 ball of radius >= sqrt(d) (the diameter of [0, 1]^d) does too."""
    d = math.prod(shape)
    if norm == "inf" and eps >= 1:
        rank_zero_warn(
            f"model.eps={eps:g} under L_inf: every image in [0, 1] is within reach (eps >= 1), so robust "
            "accuracy measures nothing but the worst image; image eps are usually 0.3 (MNIST) or 8/255"
        )
    elif norm == "2" and eps >= math.sqrt(d):
        rank_zero_warn(
            f"model.eps={eps:g} under L_2 is at least the diameter sqrt({d}) = {math.sqrt(d):.4g} of the "
            "input space: every image is within reach, so robust accuracy measures nothing"
        )
