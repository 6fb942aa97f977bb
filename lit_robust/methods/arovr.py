"""AROVR: the LightningModule of lifted-network training by (adversarial) relaxed optimal-value
reformulations. The objectives and their maths (variants, inferred states, the contrastive surrogate) are
pure functions in :mod:`lit_robust.lifted_objectives`; this module only wires them into training."""

from __future__ import annotations

import os
import warnings

import torch
import torch.nn.functional as F

from lit_robust.errors import ConfigError
from lit_robust.lifted_objectives import (
    VARIANTS,
    contrastive_potentials,
    contrastive_states,
    contrastive_surrogate,
    objective_value,
    random_wrong_labels,
    state_weights,
)
from lit_robust.methods.base import RobustClassifier
from lit_robust.nets.lifted import LiftedMLP, check_damping, euclidean_loss
from lit_robust.validate import integer, number

__all__ = ["AROVR"]


class AROVR(RobustClassifier):
    """ROVR_beta, AROVR_beta, ROVR_{alpha,beta}, AROVR_{alpha,beta} and AROVR^g_{alpha,beta} on a lifted MLP.

    Training uses inference (two inferred states per sample, see :mod:`lit_robust.lifted_objectives`);
    validation, test and attacks use the plain forward pass of the same MLP. The returned training loss has
    the VALUE of the true (1/alpha-scaled) objective and the GRADIENT of the contrastive surrogate
    ``mean [U(z+) - U(z-)] / (alpha beta)`` (``S - S.detach() + value``), so ``train/loss`` is the objective.

    Args:
        net: a :class:`~lit_robust.nets.lifted.LiftedMLP` (the parameters of an MLP).
        variant: ``arovr_g`` (AROVR^g_{a,b}), ``arovr_ab`` (AROVR_{a,b}), ``rovr_ab`` (ROVR_{a,b}), ``arovr``
            (AROVR_beta, needs beta < 1), ``rovr`` (ROVR_beta) or ``bp`` (back-propagation of the Euclidean
            loss ``mean_i 1/2 |f(x_i) - onehot(y_i)|^2`` on the same net: the paper's baseline).
        alpha: weight of the untargeted term, in (0, 1] (0.49 in the paper; alpha < 1/2 keeps every inner
            problem bounded). Not used by ``rovr``, ``arovr`` and ``bp``.
        beta: inverse multiplier > 0 (1/4 in the paper).
        g_std: standard deviation of g (``arovr_g``), N(0, 1/16) in the paper -> 0.25.
        n_sweeps: top-down inference passes after the forward-pass initialisation (20).
        damping: hidden-block update: ``"auto"`` (the damped step), ``"safe"`` (per sample, the plain LPOM
            step where it does not increase the objective, else the damped step; ~2x the inference cost);
            both never increase the inference objective; ``"none"`` (plain LPOM step, no guarantee) or a
            constant kappa >= 0.
        n_inner: damped steps per hidden block visit.
        power_iters: warm-started power iterations per step for ``damping="auto"``.
        init_from: (of every method) e.g. a ``bp``/ERM checkpoint of the same MLP: back-propagation
            pretraining.
        noise_seed: seed of the per-step random wrong labels and g (drawn from (seed, global step, rank), so a
            resumed run draws what an uninterrupted one would); None: ``seed_everything``'s seed or 0.
        **kwargs: see :class:`~lit_robust.methods.base.RobustClassifier` (eps, norm, eval_attack, optimizer,
            lr_scheduler, scheduler_interval).
    """

    monitor = "val/clean_acc"

    def __init__(
        self,
        net: LiftedMLP,
        variant: str = "arovr_g",
        alpha: float = 0.49,
        beta: float = 0.25,
        g_std: float = 0.25,
        n_sweeps: int = 20,
        damping: float | str = "auto",
        n_inner: int = 1,
        power_iters: int = 1,
        noise_seed: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(net=net, **kwargs)
        if not isinstance(net, LiftedMLP):
            raise ConfigError(
                f"model.net must be a lit_robust.nets.lifted.LiftedMLP for AROVR, got {type(net).__name__}"
            )
        if variant not in VARIANTS:
            raise ConfigError(f"model.variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        self.variant = variant
        self.alpha = number("model.alpha", alpha, 0.0, 1.0, low_open=True)
        self.beta = number("model.beta", beta, 0.0, low_open=True)
        self.g_std = number("model.g_std", g_std, 0.0)
        self.n_sweeps = integer("model.n_sweeps", n_sweeps, 1)
        self.n_inner = integer("model.n_inner", n_inner, 1)
        self.power_iters = integer("model.power_iters", power_iters, 1)
        self.damping = check_damping(damping, "model.damping")
        if noise_seed is not None:
            integer("model.noise_seed", noise_seed, 0)
        self.noise_seed = noise_seed
        if variant != "bp":
            self.plus, self.minus, self.alpha_eff = state_weights(variant, self.alpha)
            for w in (self.plus, self.minus):
                curvature = 1 + self.beta * (w.w_y + w.w_wrong)
                if curvature <= 0:
                    hint = "beta < 1" if variant == "arovr" else "1 + beta (1 - 2 alpha) > 0"
                    raise ConfigError(
                        f"model.beta={self.beta:g} makes the inner problem of variant {variant!r} unbounded "
                        f"(1 + c = {curvature:g} <= 0): need {hint}"
                    )
            if variant in ("arovr_ab", "arovr_g", "rovr_ab") and self.alpha >= 0.5:
                warnings.warn(
                    f"model.alpha={self.alpha:g} >= 1/2: abar l- - alpha l is no longer strongly convex, so "
                    "boundedness of the inner problems is not guaranteed for every beta",
                    stacklevel=2,
                )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["power_vectors"] = self.net.power_vectors()  # damping="auto"'s warm start: exact resume

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.net.load_power_vectors(checkpoint.get("power_vectors", []))

    def _generator(self, device: torch.device) -> torch.Generator:
        seed = self.noise_seed if self.noise_seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        rank = self.global_rank if self._trainer is not None else 0
        gen = torch.Generator(device=device)
        gen.manual_seed((seed * 1_000_003 + self.global_step * 1_009 + rank) % 2**63)
        return gen

    def training_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        net: LiftedMLP = self.net  # type: ignore[assignment]
        if self.variant == "bp":
            logits = net(x)
            self.log_accuracy("train", "clean", logits, y)
            return euclidean_loss(logits, F.one_hot(y, net.num_classes).to(logits.dtype)).mean()
        gen = self._generator(x.device)
        with torch.no_grad():
            forward = net.forward_with_input_drive(x)
            logits = forward[0][-1]
            target = F.one_hot(y, net.num_classes).to(logits.dtype)
            wrong = F.one_hot(random_wrong_labels(y, net.num_classes, gen), net.num_classes).to(logits.dtype)
            g = None
            if self.variant == "arovr_g" and self.g_std > 0:
                g = [
                    torch.randn(z.shape, generator=gen, device=z.device, dtype=z.dtype) * self.g_std
                    for z in forward[0][1:]
                ]
            states = contrastive_states(
                net,
                None,
                target,
                wrong,
                self.plus,
                self.minus,
                self.beta,
                g=g,
                forward=forward,
                n_sweeps=self.n_sweeps,
                damping=self.damping,
                n_inner=self.n_inner,
                power_iters=self.power_iters,
            )
            gap = (  # mean_i |z+_i - z-_i| over all layers: the internal perturbation size
                sum(
                    (zp - zm).square().sum(1)
                    for zp, zm in zip(states.plus[1:], states.minus[1:], strict=True)
                )
                .sqrt()
                .mean()
            )
        u_plus, u_minus = contrastive_potentials(net, states)
        surrogate = contrastive_surrogate(u_plus, u_minus, 1 / (self.alpha_eff * self.beta), logits)
        value = objective_value(
            states, u_plus, u_minus, target, wrong, self.plus, self.minus, self.alpha_eff, self.beta, g
        ).mean()
        self.log_accuracy("train", "clean", logits, y)
        every = self.trainer.log_every_n_steps if self._trainer is not None else 1
        if self.global_step % every == 0:  # diagnostics, sampled (Lightning's log() costs ~0.3 ms a call)
            self.log_dict(
                {
                    "train/target_loss": euclidean_loss(logits, target).mean(),
                    "train/inference_residual": states.residual,
                    "train/perturbation": gap,
                },
                on_step=True,
                on_epoch=False,
            )
        return surrogate - surrogate.detach() + value
