"""Auto-PGD (APGD) of Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks" (ICML 2020): PGD with momentum and a step size that adapts itself.

One step, for a per-sample objective f (CE, DLR, or their targeted versions), eta the step size:

    z_{k+1} = P( x_k + eta * dir(grad f(x_k)) )
    x_{k+1} = P( x_k + a (z_{k+1} - x_k) + (1 - a)(x_k - x_{k-1}) ),   a = 0.75  (a = 1 on the first step)

with dir = sign for L_inf and g / ||g||_2 for L_2, P the projection onto the eps-ball and the box [0, 1],
and eta = 2 eps at the start. At the checkpoints w_j = ceil(p_j N) (N steps) with

    p_0 = 0,  p_1 = 0.22,  p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)

the step size of a sample is halved, and its search restarts from its best point x_max so far, when

    1. the loss went up in fewer than rho * (w_j - w_{j-1}) of the steps since the last checkpoint, or
    2. its step size was not halved at the last checkpoint and its best loss has not gone up since then.

Each run returns, per sample, its worst case: a misclassified point beats a correctly classified one and
then the higher objective wins; restarts (and, in targeted mode, the runs against the different target
classes) keep the per-sample worst case, and only the samples not yet broken are attacked again.
"""

from __future__ import annotations

import torch
from torch import nn

from lit_robust.attacks.base import Attack, WorstCase
from lit_robust.errors import ConfigError
from lit_robust.losses import cross_entropy, dlr_loss, targeted_dlr_loss
from lit_robust.validate import choice, integer, number

APGD_LOSSES = ("ce", "dlr")


def apgd_checkpoints(steps: int) -> list[int]:
    """The step-size checkpoints ``[w_0, w_1, ...]`` (all <= steps) of APGD with ``steps`` iterations:
    w_j = ceil(p_j * steps), p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06).

    The p_j are computed exactly in hundredths (no float rounding in the ceil); for small ``steps``
    checkpoints that coincide are merged, so the list is strictly increasing. For 100 steps:
    ``[0, 22, 41, 57, 70, 80, 87, 93, 99]``.
    """
    steps = integer("APGD.steps", steps)
    out = [0]
    p_prev, p = 0, 22  # hundredths
    while True:
        w = -(-p * steps // 100)  # ceil(p * steps / 100), exact in integers
        if w > steps:
            return out
        if w > out[-1]:
            out.append(w)
        p_prev, p = p, p + max(p - p_prev - 3, 6)


class APGD(Attack):
    """APGD-CE, APGD-DLR and APGD-T (targeted DLR), L_inf and L_2.

    Args:
        eps: radius of the threat model (None: the method's ``model.eps``).
        norm: ``"inf"`` or ``"2"`` (None: the method's ``model.norm``).
        steps: iterations per run (N_iter; >= 1). The step size starts at 2 eps, for both norms.
        restarts: runs from new random starts (per target class in targeted mode); worst case kept.
        loss: ``"ce"`` (cross-entropy) or ``"dlr"`` (difference of logits ratio, >= 3 classes).
        targeted: attack towards target classes, with the targeted DLR loss (``loss="dlr"``, >= 4
            classes) or -CE(z, t) (``loss="ce"``). With ``attack(model, x, y, target=t)`` the attack
            runs towards ``t`` and succeeds when the prediction is ``t``. Without ``target`` it is
            APGD-T: one run (times ``restarts``) towards each of the ``n_target_classes`` classes with
            the highest clean logits other than y (target k is the (k+2)-th largest logit of a
            correctly classified sample), and success means misclassification.
        n_target_classes: number of target classes of APGD-T (capped at classes - 1).
        rho: checkpoint condition 1 threshold, in (0, 1).
        eval_mode: run the model in eval mode during the attack.
        seed: seed of the attack's own generator (None: global RNG).
    """

    momentum = 0.75
    initial_step = 2.0  # times eps

    def __init__(
        self,
        eps: float | None = None,
        norm: str | None = None,
        steps: int = 100,
        restarts: int = 1,
        loss: str = "ce",
        targeted: bool = False,
        n_target_classes: int = 9,
        rho: float = 0.75,
        eval_mode: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(eps=eps, norm=norm, eval_mode=eval_mode, seed=seed)
        self.steps = integer("APGD.steps", steps)
        self.restarts = integer("APGD.restarts", restarts)
        self.loss = choice("APGD.loss", loss, APGD_LOSSES)
        self.targeted = bool(targeted)
        self.n_target_classes = integer("APGD.n_target_classes", n_target_classes)
        self.rho = number("APGD.rho", rho, 0.0, 1.0, low_open=True, high_open=True)

    @property
    def checkpoints(self) -> list[int]:
        """Step-size checkpoints w_j for ``steps`` iterations (see :func:`apgd_checkpoints`)."""
        return apgd_checkpoints(self.steps)

    # ------------------------------------------------------------------ objective
    def objective(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Per-sample value the attack maximises."""
        if target is None:
            return cross_entropy(logits, y) if self.loss == "ce" else dlr_loss(logits, y)
        if self.loss == "ce":
            return -cross_entropy(logits, target)
        return targeted_dlr_loss(logits, y, target)

    def _check_classes(self, classes: int) -> None:
        need = (4 if self.targeted else 3) if self.loss == "dlr" else 2
        if classes < need:
            what = f"loss={self.loss!r}" + (" with targeted=True" if self.targeted else "")
            raise ConfigError(f"APGD {what} needs a model with at least {need} classes, got {classes}")

    # ------------------------------------------------------------------ search
    def perturb(self, model: nn.Module, x, y, generator=None, target=None):
        if self.eps == 0 or x.shape[0] == 0:
            return x
        with torch.no_grad():
            clean = self.logits(model, x)
        self._check_classes(clean.shape[1])
        pred = clean.argmax(dim=1)
        hit_target = self.targeted and target is not None
        if hit_target:
            if target.shape != y.shape:
                raise ConfigError(f"target must have the shape of the labels {tuple(y.shape)}")
            targets = [target]
        elif self.targeted:
            n = min(self.n_target_classes, clean.shape[1] - 1)
            ranked = clean.scatter(1, y[:, None], float("-inf")).argsort(dim=1, descending=True)
            targets = [ranked[:, k] for k in range(n)]
        else:
            targets = [None]
        success = pred == target if hit_target else pred != y
        worst = WorstCase(x, success, torch.full_like(clean[:, 0], float("-inf")))
        for t in targets:
            for _ in range(self.restarts):
                idx = (~worst.success).nonzero().squeeze(1)  # one host sync per run, none per step
                if idx.numel() == 0:
                    return worst.x
                run = self._run(model, x[idx], y[idx], None if t is None else t[idx], generator, hit_target)
                worst.merge(idx, run.x, run.success, run.value)
        return worst.x

    def random_start(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The reference implementation's start: x + eps * t / ||t|| with t ~ U[-1, 1]^d (L_inf, so one
        coordinate is at +-eps) or t ~ N(0, I) (L_2, on the sphere), clipped to the box."""
        view = (-1,) + (1,) * (x.dim() - 1)
        if self.norm == "inf":
            t = 2 * torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) - 1
            scale = t.flatten(1).abs().amax(dim=1).view(view)
        else:
            t = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            scale = t.flatten(1).norm(dim=1).view(view)
        return x + self.project_delta(x, self.eps * t / (scale + 1e-12))

    def _loss_grad(self, model, x_in, y, target):
        x_in = x_in.detach().requires_grad_(True)
        logits = self.logits(model, x_in)
        loss = self.objective(logits, y, target)
        (grad,) = torch.autograd.grad(loss.sum(), x_in)
        return loss.detach(), grad.detach(), logits.detach()

    def _run(self, model, x, y, target, generator, hit_target) -> WorstCase:
        view = (-1,) + (1,) * (x.dim() - 1)

        def success_of(logits):
            pred = logits.argmax(dim=1)
            return pred == target if hit_target else pred != y

        x_cur = self.random_start(x, generator)
        loss, grad, logits = self._loss_grad(model, x_cur, y, target)
        worst = WorstCase(x_cur, success_of(logits), loss)
        x_max, loss_max, grad_max = x_cur, loss, grad  # highest-loss point: where halving restarts
        x_prev, loss_prev = x_cur, loss
        step = torch.full((x.shape[0],), self.initial_step * self.eps, device=x.device, dtype=x.dtype)
        increases = torch.zeros_like(loss)
        reduced_last = torch.zeros_like(loss, dtype=torch.bool)  # w_0: no halving "happened" there
        loss_max_last = loss_max
        checkpoints = self.checkpoints
        last_w, next_j = 0, 1
        for k in range(1, self.steps + 1):
            a = 1.0 if k == 1 else self.momentum
            with torch.no_grad():
                z = x + self.project_delta(x, x_cur - x + step.view(view) * self.ball.ascent_direction(grad))
                moved = x_cur - x + a * (z - x_cur) + (1 - a) * (x_cur - x_prev)
                x_prev, x_cur = x_cur, x + self.project_delta(x, moved)
            loss, grad, logits = self._loss_grad(model, x_cur, y, target)
            worst.update(x_cur, success_of(logits), loss)
            increases = increases + (loss > loss_prev).to(increases.dtype)
            loss_prev = loss
            improved = loss > loss_max
            x_max = torch.where(improved.view(view), x_cur, x_max)
            grad_max = torch.where(improved.view(view), grad, grad_max)
            loss_max = torch.where(improved, loss, loss_max)
            if next_j < len(checkpoints) and k == checkpoints[next_j]:
                cond1 = increases < self.rho * (k - last_w)
                cond2 = ~reduced_last & (loss_max <= loss_max_last)
                halve = cond1 | cond2
                step = torch.where(halve, step / 2, step)
                x_cur = torch.where(halve.view(view), x_max, x_cur)
                grad = torch.where(halve.view(view), grad_max, grad)
                reduced_last, loss_max_last = halve, loss_max
                increases = torch.zeros_like(increases)
                last_w, next_j = k, next_j + 1
        return worst
