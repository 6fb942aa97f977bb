"""Lifted-network training by (adversarial) relaxed optimal-value reformulations (Zach, "Strengthening the
Internal Adversarial Robustness in Lifted Neural Networks", arXiv 2503.07818; AROVR_beta: Hoier & Zach,
ICML 2024).

With the FY potential U of :class:`~lit_robust.nets.lifted.LiftedMLP`, the Euclidean target loss
``l(z) = 1/2|z_L - y|^2`` (one-hot y) and the attack loss ``l-(z) = 1/2|z_L - y-|^2`` towards a random
wrong label y-, every variant is a difference of two minima (abar = 1 - alpha)::

    ROVR_beta           = min_z {l + U/beta}                    - min_z {U/beta}            (= ... - 0)
    AROVR_beta          = min_z {U/beta}                        - min_z {-l + U/beta}       (beta < 1)
    ROVR_{a,b}          = min_z {abar l- + a l + U/beta}        - min_z {abar l- + U/beta}
    AROVR_{a,b}         = min_z {abar l- + U/beta}              - min_z {abar l- - a l + U/beta}
    AROVR^g_{a,b}       = AROVR_{a,b} with U replaced by U + g^T z,  g ~ N(0, g_std^2) per unit and batch

and the implemented loss is ``(1/alpha) *`` that (alpha = 1 for ROVR_beta/AROVR_beta), averaged over the
batch. By the envelope theorem its weight gradient is that of the contrastive surrogate

    S(theta) = mean_i [U_theta(z+_i; x_i) - U_theta(z-_i; x_i)] / (alpha beta)

with the two minimisers z+ (first term) and z- (second) held fixed; as beta -> 0 it tends to the
back-propagation gradient of mean_i l(f(x_i)) (Prop. 4.4). Each minimiser is an inference
``argmin_z U + g^T z + c/2 |z_L|^2 - r^T z_L`` with ``c = beta (w_y + w_-)``, ``r = beta (w_y y + w_- y-)``
for the state's loss weights ``(w_y, w_-)`` (see :func:`state_weights`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lit_robust.errors import ConfigError
from lit_robust.nets.lifted import LiftedMLP, euclidean_loss

__all__ = [
    "VARIANTS",
    "StateWeights",
    "ContrastiveStates",
    "state_weights",
    "contrastive_states",
    "contrastive_potentials",
    "contrastive_surrogate",
    "objective_value",
    "random_wrong_labels",
]

#: ``bp`` is plain back-propagation on the same net and Euclidean loss (the paper's baseline)
VARIANTS = ("bp", "rovr", "arovr", "rovr_ab", "arovr_ab", "arovr_g")


@dataclass(frozen=True)
class StateWeights:
    """Loss weights of one inner problem ``min_z w_y l(z; y) + w_wrong l(z; y-) + (U(z) + g^T z) / beta``."""

    w_y: float
    w_wrong: float

    @property
    def free(self) -> bool:
        """True for ``min_z U/beta``: the forward pass (when g = 0), with U = 0 and dU/dtheta = 0."""
        return self.w_y == 0 and self.w_wrong == 0

    def perturbation(self, beta: float, y: torch.Tensor, y_wrong: torch.Tensor) -> tuple[float, torch.Tensor]:
        """``(c, r)`` of the inference after multiplying by beta: ``c = beta (w_y + w_-)``,
        ``r = beta (w_y y + w_- y-)``."""
        return beta * (self.w_y + self.w_wrong), beta * (self.w_y * y + self.w_wrong * y_wrong)


def state_weights(variant: str, alpha: float) -> tuple[StateWeights, StateWeights, float]:
    """``(plus, minus, alpha_eff)``: the loss weights of the first (z+) and second (z-) inner problem and
    the alpha of the 1/alpha scaling (1 for ROVR_beta and AROVR_beta, where alpha is not used).

    ============  =========================  ==========================
    variant       z+ (w_y, w_-)              z- (w_y, w_-)
    ============  =========================  ==========================
    rovr          (1, 0): z^beta             (0, 0): z* (forward pass)
    arovr         (0, 0): z*                 (-1, 0)
    rovr_ab       (alpha, abar): z^ls        (0, abar)
    arovr_ab, _g  (0, abar)                  (-alpha, abar)
    ============  =========================  ==========================
    """
    abar = 1.0 - alpha
    if variant == "rovr":
        return StateWeights(1.0, 0.0), StateWeights(0.0, 0.0), 1.0
    if variant == "arovr":
        return StateWeights(0.0, 0.0), StateWeights(-1.0, 0.0), 1.0
    if variant == "rovr_ab":
        return StateWeights(alpha, abar), StateWeights(0.0, abar), alpha
    if variant in ("arovr_ab", "arovr_g"):
        return StateWeights(0.0, abar), StateWeights(-alpha, abar), alpha
    raise ConfigError(f"model.variant must be one of {', '.join(VARIANTS[1:])} here, got {variant!r}")


@dataclass
class ContrastiveStates:
    """The two states (each ``[z_0, ..., z_L]``, detached), whether each was inferred (a state that was not
    is the forward pass, with U = 0 and dU/dtheta = 0), and the inference residual."""

    plus: list[torch.Tensor]
    minus: list[torch.Tensor]
    residual: torch.Tensor
    plus_inferred: bool = True
    minus_inferred: bool = True
    #: ``[z_0, ..., z_L]`` with z+ stacked over z- (2B rows) when both were inferred (one potential call)
    stacked: list[torch.Tensor] | None = None


def contrastive_states(
    net: LiftedMLP,
    x: torch.Tensor | None,
    y: torch.Tensor,
    y_wrong: torch.Tensor,
    plus: StateWeights,
    minus: StateWeights,
    beta: float,
    g: list[torch.Tensor] | None = None,
    forward: tuple[list[torch.Tensor], torch.Tensor] | None = None,
    **infer_kwargs,
) -> ContrastiveStates:
    """Infer z+ and z- (see :func:`state_weights`) for targets ``y``/``y_wrong`` ((B, n_L) vectors).

    A free state without g is the forward pass (no inference); the others run as ONE batched inference
    on the stacked batch (2B rows when both need it), from the forward-pass initialisation.
    ``forward``: ``net.forward_with_input_drive(x)`` if already computed (then x may be None).
    ``infer_kwargs`` go to :meth:`LiftedMLP.infer` (n_sweeps, damping, n_inner, power_iters)."""
    with torch.no_grad():
        states0, first_pre = forward if forward is not None else net.forward_with_input_drive(x)
        need = [g is not None or not s.free for s in (plus, minus)]
        todo = [s for s, n in zip((plus, minus), need, strict=True) if n]
        found = [states0, states0]
        residual = states0[-1].new_zeros(())
        if todo:
            n = states0[0].shape[0]
            cs, rs = zip(*(s.perturbation(beta, y, y_wrong) for s in todo), strict=True)
            c = torch.cat([states0[-1].new_full((n, 1), ci) for ci in cs])
            r = torch.cat(rs)
            reps = len(todo)
            out = net.infer(
                None,
                c=c,
                r=r,
                g=None if g is None else [gk.repeat(reps, 1) for gk in g],
                init=[z.repeat(reps, 1) for z in states0],
                first_pre=first_pre.repeat(reps, 1),
                **infer_kwargs,
            )
            residual = out.residual
            slot = 0
            for j in range(2):
                if need[j]:
                    found[j] = [z[slot * n : (slot + 1) * n] for z in out.states]
                    slot += 1
        stacked = out.states if all(need) else None
        return ContrastiveStates(found[0], found[1], residual, need[0], need[1], stacked)


def contrastive_potentials(
    net: LiftedMLP, states: ContrastiveStates
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Per-sample ``(U(z+), U(z-))``, differentiable in the parameters (states fixed), sharing the input
    drive ``a_1 = W_0 x + b_0``. A state that was not inferred is the forward pass, where U = 0 with zero
    gradient exactly: its entry is None."""
    if not (states.plus_inferred or states.minus_inferred):
        return None, None
    lin0 = net.linears[0]
    first_pre = F.linear(states.plus[0], lin0.weight, lin0.bias)
    if states.stacked is not None:  # one pass over the 2B stacked rows
        u_all = net.potential(states.stacked, first_pre.repeat(2, 1))
        n = first_pre.shape[0]
        return u_all[:n], u_all[n:]
    u_plus = net.potential(states.plus, first_pre) if states.plus_inferred else None
    u_minus = net.potential(states.minus, first_pre) if states.minus_inferred else None
    return u_plus, u_minus


def contrastive_surrogate(
    u_plus: torch.Tensor | None, u_minus: torch.Tensor | None, scale: float, like: torch.Tensor
) -> torch.Tensor:
    """``S = scale * mean_i [U(z+_i) - U(z-_i)]``, ``scale = 1/(alpha beta)`` (None = forward pass, U = 0):
    with the states fixed its parameter gradient is that of the (1/alpha-scaled) objective (envelope
    theorem). ``like``: a tensor giving dtype/device of the 0 returned when both are None."""
    if u_plus is None and u_minus is None:
        return like.new_zeros(())
    if u_minus is None:
        return scale * u_plus.mean()
    if u_plus is None:
        return -scale * u_minus.mean()
    return scale * (u_plus - u_minus).mean()


def objective_value(
    states: ContrastiveStates,
    u_plus: torch.Tensor | None,
    u_minus: torch.Tensor | None,
    y: torch.Tensor,
    y_wrong: torch.Tensor,
    plus: StateWeights,
    minus: StateWeights,
    alpha: float,
    beta: float,
    g: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Per-sample value of the implemented loss ``(1/alpha) [Psi+(z+) - Psi-(z-)]`` with
    ``Psi(z) = w_y l(z; y) + w_- l(z; y-) + (U(z) + g^T z) / beta`` (the true objective, not the surrogate);
    ``u_plus``/``u_minus`` from :func:`contrastive_potentials` (None: U = 0)."""
    with torch.no_grad():

        def psi(z: list[torch.Tensor], u: torch.Tensor | None, w: StateWeights) -> torch.Tensor:
            val = z[-1].new_zeros(z[-1].shape[0]) if u is None else u.detach() / beta
            if w.w_y:
                val = val + w.w_y * euclidean_loss(z[-1], y)
            if w.w_wrong:
                val = val + w.w_wrong * euclidean_loss(z[-1], y_wrong)
            if g is not None:
                val = val + sum((gk * zk).sum(1) for gk, zk in zip(g, z[1:], strict=True)) / beta
            return val

        return (psi(states.plus, u_plus, plus) - psi(states.minus, u_minus, minus)) / alpha


def random_wrong_labels(
    y: torch.Tensor, num_classes: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A label drawn uniformly from the ``num_classes - 1`` classes other than ``y``, per sample:
    ``(y + U{1, ..., K-1}) mod K``."""
    shift = torch.randint(1, num_classes, y.shape, device=y.device, generator=generator)
    return (y + shift) % num_classes
