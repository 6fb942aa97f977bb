"""Confidence gaps and the L2 certificates they give (Qian & Wegman, ICLR 2019, Lemmas 1 and 6).

For logits y(x) and the predicted class, the confidence gap is ``g(x) = top1(y) - top2(y)``. If every
logit is L-Lipschitz in L2 (``per_logit=True``, e.g. an L2NNN with one head per class), each logit moves
by at most L*||delta||, so the prediction cannot change while

    ||delta||_2 < g(x) / (2 L)                       (Lemma 6)

If the whole logit vector is L-Lipschitz (``per_logit=False``),

    ||delta||_2 < g(x) / (sqrt(2) L)                 (Lemma 1)

A point is *certified at radius eps* if it is classified correctly and its radius is strictly > eps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from lit_robust.errors import ConfigError
from lit_robust.losses import margin


def confidence_gap(logits: torch.Tensor) -> torch.Tensor:
    """Unsigned gap  g = top1(y) - top2(y)  per sample (>= 0; needs at least 2 classes)."""
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ConfigError(f"confidence_gap needs logits of shape (N, K >= 2), got {tuple(logits.shape)}")
    top2 = logits.topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def correct_gap(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max(0, y_label - max_{j != label} y_j) per sample: the gap on correct points, 0 on wrong ones.

    This is the paper's "average confidence gap" (Tables 3, 5, 6, 9, 10) before averaging."""
    return (-margin(logits, y)).clamp_min(0)


def radius_factor(lipschitz: float = 1.0, per_logit: bool = True) -> float:
    """The constant c in  radius = c * g:  1/(2L) per logit, 1/(sqrt(2) L) for the whole vector."""
    if not 0 < lipschitz < math.inf:
        raise ConfigError(f"lipschitz must be a finite number > 0, got {lipschitz!r}")
    return 1.0 / ((2.0 if per_logit else math.sqrt(2.0)) * lipschitz)


def certified_radius(logits: torch.Tensor, lipschitz: float = 1.0, per_logit: bool = True) -> torch.Tensor:
    """L2 radius within which the predicted class provably cannot change: ``radius_factor * g``."""
    return confidence_gap(logits) * radius_factor(lipschitz, per_logit)


def certified_correct(
    logits: torch.Tensor,
    y: torch.Tensor,
    radii: Sequence[float],
    lipschitz: float = 1.0,
    per_logit: bool = True,
) -> torch.Tensor:
    """Boolean (N, len(radii)): correct AND certified radius strictly greater than each eps."""
    radius = certified_radius(logits, lipschitz, per_logit)
    correct = logits.argmax(dim=1) == y
    eps = torch.as_tensor(list(radii), dtype=radius.dtype, device=radius.device)
    return correct[:, None] & (radius[:, None] > eps[None, :])


def net_certificate(net: torch.nn.Module) -> tuple[float, bool] | None:
    """``(L, per_logit)`` for a net that declares a Lipschitz certificate, else None.

    A net declares one with a method ``lipschitz_certificate() -> (L, per_logit)`` (see
    :class:`lit_robust.nets.L2NNNConvNet`): L is a proven upper bound on the Lipschitz constant in L2 of
    each logit (``per_logit=True``) or of the whole logit vector."""
    method = getattr(net, "lipschitz_certificate", None)
    return None if method is None else method()


def gap_values(
    logits: torch.Tensor,
    y: torch.Tensor,
    adv_logits: torch.Tensor | None = None,
    radii: Sequence[float] = (),
    certificate: tuple[float, bool] | None = None,
) -> dict[str, float]:
    """The gap summary of a split: ``mean_gap`` (mean g), ``mean_correct_gap`` (mean g_y), the same with
    ``_adv`` at adversarial logits, and, only with a proven ``certificate`` ``(L, per_logit)``,
    ``certified_lipschitz`` = L and ``certified_acc@r`` for each radius r (:func:`certified_correct`)."""
    values = {
        "mean_gap": float(confidence_gap(logits).mean()),
        "mean_correct_gap": float(correct_gap(logits, y).mean()),
    }
    if adv_logits is not None:
        values["mean_gap_adv"] = float(confidence_gap(adv_logits).mean())
        values["mean_correct_gap_adv"] = float(correct_gap(adv_logits, y).mean())
    if certificate is not None and radii:
        lip, per_logit = certificate
        certified = certified_correct(logits, y, radii, lip, per_logit).float().mean(0)
        values["certified_lipschitz"] = float(lip)
        values.update({f"certified_acc@{r!r}": v for r, v in zip(radii, certified.tolist(), strict=True)})
    return values
