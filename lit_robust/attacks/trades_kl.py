"""The TRADES inner maximisation (Zhang et al., "Theoretically Principled Trade-off between Robustness and
Accuracy", ICML 2019; official ``yaodongyu/TRADES/trades.py``).

The attack moves away from the model's own clean prediction, not from the label:

    p      = softmax(f(x))                                   (computed once, detached)
    x'_0   = Proj(x + init_std * N(0, I))
    x'_t+1 = Proj( x'_t + alpha * dir(grad_{x'} KL(p || softmax(f(x'_t)))) )

with dir = sign for L_inf and g / ||g||_2 for L_2, Proj the projection onto the eps-ball around x and the
box [0, 1], and KL(p || q) = sum_k p_k (log p_k - log q_k) per sample. The last iterate is returned (no
best-iterate tracking), as in the official code.
"""

from __future__ import annotations

import torch

from lit_robust.attacks.base import Attack
from lit_robust.losses import kl_divergence
from lit_robust.validate import integer, non_negative


class TRADESKL(Attack):
    """KL attack of TRADES: maximise KL(softmax(f(x)) || softmax(f(x'))) over the eps-ball.

    The label ``y`` is not used (TRADES's attack is label-free: it pushes away from the clean prediction),
    so any labels give the same result under the same seed.

    Args:
        eps: radius of the threat model (None: the method's ``model.eps``).
        norm: ``"inf"`` (sign steps) or ``"2"`` (normalised-gradient steps); None: ``model.norm``.
        steps: number of ascent steps (>= 1).
        alpha: step size; default ``eps / 4`` (2/255 at eps 8/255), following eps.
        init_std: standard deviation of the Gaussian start around x (official: 0.001); 0 starts at x,
            where the KL gradient is zero and the attack cannot move.
        eval_mode: run the model in eval mode during the attack.
        seed: seed of the attack's own generator (None: global RNG).
    """

    def __init__(
        self,
        eps: float | None = None,
        norm: str | None = None,
        steps: int = 10,
        alpha: float | None = None,
        init_std: float = 0.001,
        eval_mode: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(eps=eps, norm=norm, eval_mode=eval_mode, seed=seed)
        self.steps = integer("TRADESKL.steps", steps)
        self.alpha = non_negative("TRADESKL.alpha", alpha, optional=True)
        self.init_std = non_negative("TRADESKL.init_std", init_std)

    @property
    def step_size(self) -> float:
        """``alpha``, or ``eps / 4`` when alpha is not given."""
        return self.eps / 4 if self.alpha is None else self.alpha

    def perturb(self, model, x, y, generator=None, target=None):
        """KL ascent from a Gaussian start; ``y`` and ``target`` are ignored."""
        with torch.no_grad():
            clean_logits = self.logits(model, x)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_adv = self.clip(x, x + self.init_std * noise)
        box = self.ball.feasible_box(x)
        for _ in range(self.steps):
            x_adv = x_adv.detach().requires_grad_(True)
            kl = kl_divergence(clean_logits, self.logits(model, x_adv))
            (g,) = torch.autograd.grad(kl.sum(), x_adv)
            x_adv = self.ascend(x, x_adv.detach(), g, self.step_size, box)
        return x_adv.detach()
