"""Optimisers and weight-space components: :class:`EntropySGD` (first and second order, Kanai et al.) and
:class:`AWP` (adversarial weight perturbation, Wu et al. 2020)."""

from lit_robust.optim.awp import AWP
from lit_robust.optim.entropy_sgd import EntropySGD

__all__ = ["AWP", "EntropySGD"]
