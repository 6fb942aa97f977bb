"""Projected gradient descent (Madry et al., 2018), L_inf and L_2, untargeted and targeted.

One step, for a per-sample objective L (CE or margin; its negative towards a target when targeted):

    delta <- Proj_{||.|| <= eps, x + . in [0,1]} ( delta + alpha * dir(grad_delta L(f(x + delta), y)) )

with dir = sign for L_inf and g / ||g||_2 for L_2, from a uniform random start in the ball (or 0).
With ``restarts`` > 1 the search is repeated from new random starts and, per sample, the worst case is
kept. With ``keep_best`` the best iterate of each run is kept rather than the last one. "Worse" means:
misclassified (or, targeted, classified as the target) beats not, and then a higher objective wins.
Under a fixed seed this makes the attack monotone: more steps or more restarts are never weaker.
"""

from __future__ import annotations

import torch
from torch import nn

from lit_robust.attacks.base import Attack, WorstCase
from lit_robust.errors import ConfigError
from lit_robust.losses import ATTACK_LOSSES, targeted_objective
from lit_robust.validate import integer, non_negative


class PGD(Attack):
    """PGD with random start, restarts and targeted mode.

    Args:
        eps: radius of the threat model (None: the method's ``model.eps``).
        norm: ``"inf"`` or ``"2"`` (None: the method's ``model.norm``).
        steps: number of gradient steps (>= 1).
        alpha: step size; default ``2.5 * eps / steps`` (Madry et al.), following eps.
        random_start: start from a uniform sample of the eps-ball instead of x.
        init_std: with ``random_start``, start from x + init_std * N(0, I) (projected) instead of a uniform
            sample of the ball: the small Gaussian start of the TRADES and MART reference code (0.001).
        restarts: independent runs; the worst case per sample is returned.
        targeted: move towards a target class instead of away from the label. Targets are passed as
            ``attack(model, x, y, target=t)`` or else drawn per ``target_mode``.
        target_mode: ``"random"`` (a uniformly random wrong class) or ``"least_likely"``.
        loss: ``"ce"`` (cross-entropy) or ``"margin"`` (Carlini-Wagner margin).
        keep_best: return each run's best iterate instead of its last one.
        eval_mode: run the model in eval mode during the attack.
        seed: seed of the attack's own generator (None: global RNG).
    """

    def __init__(
        self,
        eps: float | None = None,
        norm: str | None = None,
        steps: int = 10,
        alpha: float | None = None,
        random_start: bool = True,
        init_std: float | None = None,
        restarts: int = 1,
        targeted: bool = False,
        target_mode: str = "random",
        loss: str = "ce",
        keep_best: bool = True,
        eval_mode: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(eps=eps, norm=norm, eval_mode=eval_mode, seed=seed)
        self.steps = integer("PGD.steps", steps)
        self.alpha = non_negative("PGD.alpha", alpha, optional=True)
        self.random_start = bool(random_start)
        self.init_std = non_negative("PGD.init_std", init_std, optional=True)
        self.restarts = integer("PGD.restarts", restarts)
        self.targeted = bool(targeted)
        if target_mode not in ("random", "least_likely"):
            raise ConfigError(f"target_mode must be 'random' or 'least_likely', got {target_mode!r}")
        self.target_mode = target_mode
        if loss not in ATTACK_LOSSES:
            raise ConfigError(f"loss must be one of {sorted(ATTACK_LOSSES)}, got {loss!r}")
        self.loss = loss
        self.keep_best = bool(keep_best)

    @property
    def step_size(self) -> float:
        """``alpha``, or ``2.5 * eps / steps`` when alpha is not given."""
        return 2.5 * self.eps / self.steps if self.alpha is None else self.alpha

    # ------------------------------------------------------------------ objective
    def objective(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Per-sample value the attack maximises."""
        if self.targeted:
            return targeted_objective(self.loss, logits, target)
        return ATTACK_LOSSES[self.loss](logits, y)

    def success(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Per-sample success: misclassified, or classified as the target when targeted."""
        pred = logits.argmax(dim=1)
        return pred == target if self.targeted else pred != y

    def choose_targets(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Target classes for targeted mode: a random wrong class, or the least likely class at x."""
        with torch.no_grad():
            logits = self.logits(model, x)
        if self.target_mode == "least_likely":
            return logits.argmin(dim=1)
        k = logits.shape[1]
        offset = torch.randint(1, k, y.shape, generator=generator, device=y.device)
        return (y + offset) % k

    # ------------------------------------------------------------------ search
    def perturb(self, model, x, y, generator=None, target=None):
        if self.targeted and target is None:
            target = self.choose_targets(model, x, y, generator)
        track = self.keep_best or self.restarts > 1
        best = WorstCase(x) if track else None
        x_adv = x
        for _ in range(self.restarts):
            x_adv = self._run(model, x, y, target, generator, best)
        return best.x if track else x_adv

    def _run(self, model, x, y, target, generator, best: WorstCase | None) -> torch.Tensor:
        delta = torch.zeros_like(x)
        if self.random_start and self.eps > 0:
            if self.init_std is None:
                start = self.ball.random_init(x, generator)
            else:
                start = self.init_std * torch.randn(
                    x.shape, generator=generator, device=x.device, dtype=x.dtype
                )
            delta = self.project_delta(x, start)
        box = self.ball.feasible_box(x)  # L_inf: each step is one fused add and one clamp
        x_adv = x + delta
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            logits = self.logits(model, x_adv)
            obj = self.objective(logits, y, target)
            (grad,) = torch.autograd.grad(obj.sum(), x_adv)
            x_adv = x_adv.detach()
            if best is not None and self.keep_best:
                best.update(x_adv, self.success(logits, y, target), obj.detach())
            x_adv = self.ascend(x, x_adv, grad, self.step_size, box)
        if best is not None:
            with torch.no_grad():
                logits = self.logits(model, x_adv)
            best.update(x_adv, self.success(logits, y, target), self.objective(logits, y, target))
        return x_adv
