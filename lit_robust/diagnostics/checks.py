"""All diagnostics of a trained net on a set of images, as one dictionary: what ``evaluate --checks N``
adds to its report (and what scripts call directly).

- ``gaps``: :func:`~lit_robust.diagnostics.gaps.gap_values` at the clean and the evaluation attack's
  logits, with certified accuracy only for a net with a proven certificate;
- ``lipschitz``: :func:`~lit_robust.diagnostics.lipschitz.lipschitz_values` (estimates and lower bounds),
  plus ``certificate`` when the net declares one;
- ``masking``: :class:`~lit_robust.diagnostics.masking.MaskingChecks` rates and flags, with the white-box
  attack being the evaluation attack.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lit_robust.attacks import Attack
from lit_robust.diagnostics.gaps import gap_values, net_certificate
from lit_robust.diagnostics.lipschitz import lipschitz_values
from lit_robust.diagnostics.masking import MaskingChecks


def run_checks(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack,
    eps: float,
    norm: str,
    radii: Sequence[float] = (),
    masking: MaskingChecks | None = None,
) -> dict:
    """``{"gaps": ..., "lipschitz": ..., "masking": ..., "flags": [raised masking checks]}`` for ``net``
    on ``(x, y)``; ``attack`` (bound to eps/norm) is the white-box attack. The net's mode is restored."""
    masking = masking if masking is not None else MaskingChecks()
    was_training = net.training
    net.eval()
    try:
        x_adv = attack(net, x, y)
        with torch.no_grad():
            logits, adv_logits = net(x), net(x_adv)
        certificate = net_certificate(net)
        lipschitz = lipschitz_values(net, x, x_adv)
        if certificate is not None:
            lipschitz["certificate"] = float(certificate[0])
        values, flags = masking.report(masking.counts(net, x, y, eps, norm, adv_logits))
    finally:
        net.train(was_training)
    return {
        "n_samples": int(x.shape[0]),
        "gaps": gap_values(logits, y, adv_logits, radii, certificate),
        "lipschitz": lipschitz,
        "masking": values,
        "flags": [k for k, raised in flags.items() if raised],
    }
