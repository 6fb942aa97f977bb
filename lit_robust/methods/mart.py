"""MART (Wang et al., ICLR 2020, "Improving adversarial robustness requires revisiting misclassified
examples"): boosted CE on the adversarial example plus a KL term weighted by the clean misclassification
probability,

    L = mean_i [ BCE(p'_i, y_i) + beta * KL(p_i || p'_i) * (1 - p_{i,y_i}) ],   x' = PGD_CE(x, y)

(:func:`lit_robust.losses.mart` has the exact formula and the official numerical constants).
"""

from __future__ import annotations

import torch

from lit_robust.attacks import PGD, Attack
from lit_robust.losses import mart_terms
from lit_robust.methods.base import RobustClassifier
from lit_robust.validate import non_negative


class MART(RobustClassifier):
    """MART adversarial training.

    Args:
        beta: weight of the misclassification-aware KL term: 6 (the official WideResNet setting); its
            authors use 5 for ResNet-18 (set it in the config).
        train_attack: attack generating x'. Default: PGD-CE, 10 steps of eps/4, last iterate, from the
            official code's start x + 0.001 * N(0, I) (``PGD(init_std=0.001)``), not a uniform point of the
            ball: at eps 0.3 (MNIST) a uniform start moves every pixel by up to 0.3 before the first step.
        **kwargs: see :class:`~lit_robust.methods.base.RobustClassifier`.
    """

    def __init__(self, beta: float = 6.0, train_attack: Attack | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.beta = non_negative("model.beta", beta)
        default = PGD(steps=10, alpha=self.eps / 4, init_std=0.001, keep_best=False)
        self.train_attack = self.bind_attack(train_attack if train_attack is not None else default)

    def training_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        logits, logits_adv, y = self.paired_logits(batch)
        return self.loss_from_terms(mart_terms(logits, logits_adv, y, self.beta))
