"""Diagnostics of trained nets as pure functions: confidence gaps and certificates (:mod:`.gaps`), Lipschitz
estimates (:mod:`.lipschitz`), gradient-masking checks (:mod:`.masking`) and all of them at once
(:func:`run_checks`). The monitoring callbacks, ``evaluate --checks`` and the scripts use these."""

from lit_robust.diagnostics.checks import run_checks
from lit_robust.diagnostics.gaps import (
    certified_correct,
    certified_radius,
    confidence_gap,
    correct_gap,
    gap_values,
    net_certificate,
    radius_factor,
)
from lit_robust.diagnostics.lipschitz import (
    jacobian_norm,
    layer_operator_norm,
    layer_product,
    lipschitz_values,
    operator_norm,
    pair_ratios,
    spectral_norms,
)
from lit_robust.diagnostics.masking import MaskingChecks, random_vertices

__all__ = [
    "MaskingChecks",
    "certified_correct",
    "certified_radius",
    "confidence_gap",
    "correct_gap",
    "gap_values",
    "jacobian_norm",
    "layer_operator_norm",
    "layer_product",
    "lipschitz_values",
    "net_certificate",
    "operator_norm",
    "pair_ratios",
    "radius_factor",
    "random_vertices",
    "run_checks",
    "spectral_norms",
]
