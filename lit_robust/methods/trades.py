"""TRADES (Zhang et al., ICML 2019, "Theoretically principled trade-off between robustness and accuracy"):

    min_theta  E [ CE(f(x), y) + beta * max_{||x'-x|| <= eps} KL( softmax(f(x)) || softmax(f(x')) ) ]

The inner max is the TRADES-KL attack (x + 0.001 N(0, I) start, sign steps); the outer loss is
:func:`lit_robust.losses.trades`, with gradients through both f(x) and f(x').
"""

from __future__ import annotations

import torch

from lit_robust.attacks import TRADESKL, Attack
from lit_robust.losses import trades_terms
from lit_robust.methods.base import RobustClassifier
from lit_robust.validate import non_negative


class TRADES(RobustClassifier):
    """TRADES adversarial training.

    Args:
        beta: weight of the KL (robustness) term; 6 as in the official code (1 - 10 is the useful range,
            larger is more robust and less accurate).
        train_attack: attack generating x'. Default: TRADES-KL, 10 steps of eps/4.
        **kwargs: see :class:`~lit_robust.methods.base.RobustClassifier`.
    """

    def __init__(self, beta: float = 6.0, train_attack: Attack | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.beta = non_negative("model.beta", beta)
        default = TRADESKL(steps=10, alpha=self.eps / 4)
        self.train_attack = self.bind_attack(train_attack if train_attack is not None else default)

    def training_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        logits, logits_adv, y = self.paired_logits(batch)
        return self.loss_from_terms(trades_terms(logits, logits_adv, y, self.beta))
