"""BETA-AT and SBETA-AT (Robey et al., ICLR 2024, "Adversarial training should be cast as a non-zero-sum
game"): the attacker maximises the negative margin M_j = f(x')_j - f(x')_y of every wrong class j (the
BETA attack), the defender minimises cross-entropy at the attacker's point:

    BETA-AT  (Alg. 2):  L = mean_i CE(f(x_i + eta*_{i j*}), y_i),   j* = argmax_j M_j(x_i + eta*_ij)
    SBETA-AT (Alg. 3):  L = mean_i sum_{j != y_i} lambda_ij CE(f(x_i + eta*_ij), y_i),
                        lambda_i = softmax_j(mu * M_j(x_i + eta*_ij))   (detached, eq. 34)

eta*_ij maximises the class-j margin over the eps-ball (BETA's targeted runs; no gradient through them).
"""

from __future__ import annotations

import torch

from lit_robust.attacks import BETA
from lit_robust.errors import ConfigError
from lit_robust.losses import cross_entropy, negative_margins, sbeta_weights
from lit_robust.methods.base import RobustClassifier
from lit_robust.validate import non_negative


class BETAAT(RobustClassifier):
    """BETA adversarial training (non-zero-sum: margin attacker, cross-entropy defender).

    Args:
        train_attack: a :class:`~lit_robust.attacks.BETA` attack. Default: BETA-10 with RMSprop steps of
            lr eps/4 (the paper's 2/255 at eps 8/255), one run per wrong class.
        **kwargs: see :class:`~lit_robust.methods.base.RobustClassifier`.
    """

    def __init__(self, train_attack: BETA | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        attack = train_attack if train_attack is not None else BETA(steps=10)
        if not isinstance(attack, BETA):
            raise ConfigError(
                f"model.train_attack of {type(self).__name__} must be a lit_robust.attacks.BETA, "
                f"got {type(attack).__name__}"
            )
        self.train_attack = self.bind_attack(attack)

    def training_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        result = self.train_attack.run(self.net, x, y)
        self.log("train/frac_margin_pos", (result.margins.amax(1) > 0).float().mean(), on_epoch=True)
        logits = self(result.x_adv)
        self.log_accuracy("train", "robust", logits, y)
        return cross_entropy(logits, y).mean()


class SBETAAT(BETAAT):
    """Smoothed BETA-AT: every wrong class's perturbation enters the loss, weighted by a softmax of its
    margin at temperature ``mu`` (computed from the defender's own forward pass and detached).

    The defender's forward and backward run on B*(K-1) images (K-1 times BETA-AT's update).

    Args:
        mu: temperature; mu -> inf recovers BETA-AT, mu -> 0 averages the K-1 targeted perturbations.
            The paper gives no value; 1.0 (margins are in logit units).
        train_attack, **kwargs: as :class:`BETAAT`.
    """

    def __init__(self, mu: float = 1.0, train_attack: BETA | None = None, **kwargs) -> None:
        super().__init__(train_attack=train_attack, **kwargs)
        self.mu = non_negative("model.mu", mu)

    def training_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        result = self.train_attack.run(self.net, x, y)
        b, k1 = result.targets.shape
        logits = self(result.per_target_x.flatten(0, 1))  # (B*(K-1), K)
        y_rep = y.repeat_interleave(k1)
        margins = negative_margins(logits, y_rep).gather(1, result.targets.reshape(-1, 1)).view(b, k1)
        weights = sbeta_weights(margins.detach(), self.mu)
        ce = cross_entropy(logits, y_rep).view(b, k1)
        self.log("train/frac_margin_pos", (result.margins.amax(1) > 0).float().mean(), on_epoch=True)
        chosen = result.margins.argmax(dim=1)  # BETA's j*, as an index into the K-1 targets
        self.log_accuracy("train", "robust", logits.view(b, k1, -1)[torch.arange(b), chosen], y)
        return (weights * ce).sum(dim=1).mean()
