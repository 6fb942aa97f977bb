"""PGD adversarial training (Madry et al., ICLR 2018, "Towards deep learning models resistant to
adversarial attacks"):

    min_theta  E_(x,y) [ max_{||delta|| <= eps, x+delta in [0,1]}  CE(f_theta(x + delta), y) ]

The inner max is approximated by PGD (run with the model in eval mode); by Danskin's theorem the outer
gradient is the gradient of CE at the attack's output.
"""

from __future__ import annotations

import torch

from lit_robust.attacks import PGD, Attack
from lit_robust.losses import cross_entropy
from lit_robust.methods.base import RobustClassifier


class PGDAT(RobustClassifier):
    """Madry's PGD-AT.

    Args:
        train_attack: attack that generates training examples (its eps/norm default to the module's).
            Default: PGD-10 with step eps/4, uniform random start, last iterate (Madry's rule; 40 steps of
            0.01 for MNIST eps 0.3, 10 steps of 2/255 for CIFAR-10 eps 8/255 are set in the configs).
        **kwargs: see :class:`~lit_robust.methods.base.RobustClassifier` (net, eps, norm, eval_attack,
            optimizer, lr_scheduler, scheduler_interval).
    """

    def __init__(self, train_attack: Attack | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        default = PGD(steps=10, alpha=self.eps / 4, keep_best=False)
        self.train_attack = self.bind_attack(train_attack if train_attack is not None else default)

    def training_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        x_adv = self.train_attack(self.net, x, y)
        logits = self(x_adv)
        self.log_accuracy("train", "robust", logits, y)
        return cross_entropy(logits, y).mean()
