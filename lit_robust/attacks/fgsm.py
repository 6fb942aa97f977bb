"""Fast gradient sign method (Goodfellow et al., 2015) and FGSM with random start (Wong et al., 2020).

    x_adv = Proj( x + delta_0 + alpha * dir(grad_x L(f(x + delta_0), y)) )

FGSM: delta_0 = 0, alpha = eps. FGSM-RS: delta_0 ~ U(ball), alpha = 1.25 eps. It is PGD with one step.
"""

from __future__ import annotations

from lit_robust.attacks.pgd import PGD


class FGSM(PGD):
    """One-step attack.

    Args:
        eps: radius of the threat model (None: the method's ``model.eps``).
        norm: ``"inf"`` (the classic FGSM) or ``"2"`` (fast gradient method); None: ``model.norm``.
        random_start: FGSM-RS of Wong et al. (uniform start in the ball).
        alpha: step size; default ``eps``, or ``1.25 * eps`` with a random start.
        targeted: step towards a target class.
        loss: ``"ce"`` or ``"margin"``.
        eval_mode: run the model in eval mode during the attack.
        seed: seed of the attack's own generator (None: global RNG).
    """

    def __init__(
        self,
        eps: float | None = None,
        norm: str | None = None,
        random_start: bool = False,
        alpha: float | None = None,
        targeted: bool = False,
        loss: str = "ce",
        eval_mode: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            eps=eps,
            norm=norm,
            steps=1,
            alpha=alpha,
            random_start=random_start,
            restarts=1,
            targeted=targeted,
            loss=loss,
            keep_best=False,
            eval_mode=eval_mode,
            seed=seed,
        )

    @property
    def step_size(self) -> float:
        """``alpha``, or ``eps`` (``1.25 * eps`` with a random start)."""
        if self.alpha is not None:
            return self.alpha
        return 1.25 * self.eps if self.random_start else self.eps
