"""Loss maths shared by attacks and methods, as pure per-sample functions of logits.

Every function returns one value per sample (shape (N,)); reduce with ``.mean()`` where a method needs a
scalar. Notation: z = logits (N, K), y = labels (N,).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CE(z, y) = -log softmax(z)_y = logsumexp(z) - z_y, per sample."""
    return F.cross_entropy(logits, y, reduction="none")


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin  m(z, y) = max_{j != y} z_j - z_y  (positive iff misclassified), per sample."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return others.amax(dim=1) - z_y


ATTACK_LOSSES = {"ce": cross_entropy, "margin": margin}
"""Untargeted attack objectives by name: an attack maximises ``ATTACK_LOSSES[name](z, y)``."""


def targeted_objective(name: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Objective a targeted attack maximises to reach class t:
    ``-CE(z, t)`` for ``"ce"``, and ``z_t - max_{j != t} z_j = -m(z, t)`` for ``"margin"``."""
    return -ATTACK_LOSSES[name](logits, target)
