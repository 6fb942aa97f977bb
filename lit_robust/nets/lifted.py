"""Lifted MLP: a layered network whose activities minimise a Fenchel-Young (LPOM) potential, and the
batched inference engine that computes them (Zach, "Strengthening the Internal Adversarial Robustness in
Lifted Neural Networks", arXiv 2503.07818; Hoier & Zach, ICML 2024).

Notation (layers k = 0..L, ``z_0 = x`` is fixed, ``z_1..z_L`` are the variables)::

    a_k      = W_{k-1} z_{k-1} + b_{k-1}                      (pre-activation of layer k)
    D_k(z||a) = G_k(z) - z^T a + G_k*(a) >= 0,   = 0  iff  z = f_k(a)
        ReLU layer  (G = 1/2|.|^2 + i_{z>=0}):  D = 1/2|z|^2 - z^T a + 1/2|relu(a)|^2
                                                  = 1/2|z - a|^2 - 1/2|min(a, 0)|^2
        linear out  (G = 1/2|.|^2):             D = 1/2|z - a|^2
    U_theta(z; x) = sum_{k=1..L} D_k(z_k || a_k)              (minimised by the forward pass, min U = 0)

Every state needed by ROVR/AROVR and their variants is the minimiser of

    Phi(z) = U(z; x) + sum_k g_k^T z_k + c/2 |z_L|^2 - r^T z_L

for a scalar (or per-sample) ``c`` with ``1 + c > 0``, a target vector ``r`` and an optional linear
perturbation ``g``. :meth:`LiftedMLP.infer` minimises Phi by block-coordinate descent: a forward-pass
initialisation, then ``n_sweeps`` top-down passes k = L, L-1, ..., 1, each updating one block with the
others fixed:

    output (exact block minimiser):  z_L <- (a_L - g_L + r) / (1 + c)
    hidden (damped prox-linear step): z_k <- relu( (a_k - g_k + kappa_k z_k + W_k^T e_k) / (1 + kappa_k) ),
        e_k = z_{k+1} - f_{k+1}(W_k z_k + b_k)             (top-down residual, f_L = identity)
        kappa_k = 1.05 * max(0, |W_k|_2^2 - 1) / 2          (damping="auto")

The hidden step is forward-backward splitting on the block objective
``J_k(z) = 1/2|z - (a_k - g_k)|^2 + G*_{k+1}(W_k z + b_k) - z_{k+1}^T W_k z  s.t. z >= 0`` whose smooth
part has a gradient with Lipschitz constant <= |W_k|_2^2, so with kappa_k >= (|W_k|_2^2 - 1)/2 it never
increases Phi: ``J_k(new) <= J_k(old) - 1/2 (1 + 2 kappa_k - |W_k|^2) |new - old|^2``. Its fixed point is
the block optimum ``z_k = relu(a_k - g_k + W_k^T e_k)`` (paper eq. 17 with gamma = 1). kappa = 0 is the
plain LPOM step (guaranteed only when |W_k|_2 <= 1); damping="safe" takes it per sample wherever it does
not increase the block objective J_k (evaluated exactly), and the damped step elsewhere: the same
guarantee, faster convergence once the weights have grown (kappa ~ 5-10 late in training makes the damped
step short), about twice the cost per sweep. The spectral norm
comes from a power iteration whose vectors are kept (warm start) in non-persistent buffers, so
``state_dict`` is exactly that of :class:`~lit_robust.nets.MLP`.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lit_robust.errors import ConfigError
from lit_robust.nets.mlp import MLP
from lit_robust.validate import non_negative

__all__ = [
    "LiftedMLP",
    "LiftedInference",
    "fy_relu_divergence",
    "fy_linear_divergence",
    "euclidean_loss",
    "inference_objective",
]

#: damping factor on the power-iteration estimate of (|W|^2 - 1)/2 (covers its under-estimate)
DAMPING_SAFETY = 1.05


def fy_relu_divergence(z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Per-sample Fenchel-Young divergence of a ReLU layer, for ``z >= 0`` (shape (B, n) -> (B,)):

    ``D(z||a) = 1/2|z|^2 - z^T a + 1/2|relu(a)|^2  (= 1/2|z - a|^2 - 1/2|min(a, 0)|^2)``,
    ``dD/da = relu(a) - z``. It is exactly 0 at ``z = relu(a)``.
    """
    return (0.5 * z * z - z * a + 0.5 * F.relu(a).square()).sum(1)


def fy_linear_divergence(z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Per-sample divergence of a linear layer: ``D(z||a) = 1/2|z - a|^2``, ``dD/da = a - z``."""
    return 0.5 * (z - a).square().sum(1)


def euclidean_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample target loss ``l(z; y) = 1/2|z - y|^2`` (summed over units, shape (B,))."""
    return 0.5 * (z - y).square().sum(1)


def inference_objective(
    potential: torch.Tensor,
    states: list[torch.Tensor],
    c: float | torch.Tensor = 0.0,
    r: torch.Tensor | None = None,
    g: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Per-sample objective of inference: ``Phi = U + sum_k g_k^T z_k + c/2 |z_L|^2 - r^T z_L``.

    Args:
        potential: ``U(z; x)`` per sample, shape (B,).
        states: ``[z_0, z_1, ..., z_L]`` (z_0 is the input and is not used).
        c: scalar or (B, 1) curvature of the output perturbation.
        r: (B, n_L) linear coefficient of the output perturbation (None: 0).
        g: ``[g_1, ..., g_L]`` (shapes of z_1..z_L) or None.
    """
    z_out = states[-1]
    c_col = c if isinstance(c, torch.Tensor) else torch.full_like(z_out[:, :1], float(c))
    phi = potential + 0.5 * c_col.reshape(-1) * z_out.square().sum(1)
    if r is not None:
        phi = phi - (r * z_out).sum(1)
    if g is not None:
        for g_k, z_k in zip(g, states[1:], strict=True):
            phi = phi + (g_k * z_k).sum(1)
    return phi


@dataclass
class LiftedInference:
    """Result of :meth:`LiftedMLP.infer`.

    Attributes:
        states: ``[z_0, z_1, ..., z_L]`` (z_0 = flattened input), detached.
        residual: max |change| of any activity in the last sweep (0-dim tensor): the inference residual.
        kappa: damping used for the hidden blocks k = 1..L-1 (0-dim tensors or floats).
    """

    states: list[torch.Tensor]
    residual: torch.Tensor
    kappa: list[torch.Tensor | float]


class LiftedMLP(MLP):
    """A ReLU MLP read as a lifted network with the Fenchel-Young potential (linear output layer, biases).

    The parameters are exactly those of :class:`~lit_robust.nets.MLP` (``layers.0.weight``, ...), so an
    ERM/backprop checkpoint of the same MLP loads as is, and ``forward`` is the MLP's forward pass, which
    is also the minimiser of the potential (test-time predictions never use inference).

    Args:
        in_features, hidden, num_classes, mean, std: as for :class:`~lit_robust.nets.MLP`.
        init: ``"normal"``: W ~ N(0, 1/fan_in), b = 0 (as the lifted-network reference code); ``"torch"``:
            PyTorch's default ``nn.Linear`` initialisation (that of MLP).
    """

    def __init__(
        self,
        in_features: int = 784,
        hidden: list[int] = (256, 256),  # type: ignore[assignment]  # tuple: immutable default
        num_classes: int = 10,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        init: str = "normal",
    ) -> None:
        super().__init__(in_features=in_features, hidden=hidden, num_classes=num_classes, mean=mean, std=std)
        if init not in ("normal", "torch"):
            raise ConfigError(f"LiftedMLP: init must be 'normal' or 'torch', got {init!r}")
        self.init = init
        self._linear_idx = [i for i, m in enumerate(self.layers) if isinstance(m, nn.Linear)]
        if init == "normal":
            with torch.no_grad():
                for lin in self.linears:
                    lin.weight.normal_(0.0, 1.0 / math.sqrt(lin.in_features))
                    lin.bias.zero_()
        for i in range(len(self._linear_idx)):  # power-iteration vectors (empty = not started)
            self.register_buffer(f"_power_v{i}", torch.zeros(0), persistent=False)

    # ------------------------------------------------------------------ structure
    @property
    def linears(self) -> list[nn.Linear]:
        """``[W_0, ..., W_{L-1}]`` as ``nn.Linear`` modules (W_k maps layer k to layer k+1)."""
        return [self.layers[i] for i in self._linear_idx]

    @property
    def depth(self) -> int:
        """L, the number of variable layers (hidden layers + output)."""
        return len(self._linear_idx)

    def input_states(self, x: torch.Tensor) -> torch.Tensor:
        """``z_0``: the (normalised) input flattened to (B, in_features), after the MLP's shape checks."""
        if x.dim() < 2 or x.shape[1:].numel() != self.in_features:
            super().forward(x)  # raises the MLP's ConfigError naming the shape
        return self.normalize(x).flatten(1)

    def forward_states(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[z_0, z_1, ..., z_L]`` of the forward pass ``z_k = f_k(a_k)`` (= argmin_z U, where U = 0)."""
        return self.forward_with_input_drive(x)[0]

    def forward_with_input_drive(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The forward states and ``a_1 = W_0 z_0 + b_0``, which no inference changes (z_0 is fixed):
        pass it on as ``first_pre`` to :meth:`infer` and :meth:`potential` to skip recomputing it."""
        states = [self.input_states(x)]
        lins = self.linears
        first_pre = None
        for k, lin in enumerate(lins):
            a = F.linear(states[-1], lin.weight, lin.bias)
            first_pre = a if k == 0 else first_pre
            states.append(a if k == len(lins) - 1 else F.relu(a))
        return states, first_pre

    # ------------------------------------------------------------------ potential
    def potential(self, states: list[torch.Tensor], first_pre: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample FY potential ``U(z; x) = sum_k D_k(z_k || W_{k-1} z_{k-1} + b_{k-1})``, shape (B,).

        Differentiable in the parameters; with the states detached its gradient is
        ``dU/dW_{k-1} = (f_k(a_k) - z_k) z_{k-1}^T``, ``dU/db_{k-1} = f_k(a_k) - z_k`` (summed over the batch
        when U is summed). Hidden states must be >= 0 (where the ReLU divergence is finite). ``first_pre``:
        ``a_1 = W_0 z_0 + b_0`` if already computed (it only depends on the input).
        """
        lins = self.linears
        total = None
        for k, lin in enumerate(lins):
            if k == 0 and first_pre is not None:
                a = first_pre
            else:
                a = F.linear(states[k], lin.weight, lin.bias)
            z = states[k + 1]
            d = fy_linear_divergence(z, a) if k == len(lins) - 1 else fy_relu_divergence(z, a)
            total = d if total is None else total + d
        return total

    def objective(
        self,
        states: list[torch.Tensor],
        c: float | torch.Tensor = 0.0,
        r: torch.Tensor | None = None,
        g: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Per-sample ``Phi(z) = U(z; x) + sum_k g_k^T z_k + c/2 |z_L|^2 - r^T z_L`` (what :meth:`infer`
        minimises)."""
        return inference_objective(self.potential(states), states, c, r, g)

    # ------------------------------------------------------------------ damping
    def power_vectors(self) -> list[torch.Tensor]:
        """The power iteration's warm-start vectors (kept out of ``state_dict``; checkpoints of AROVR
        carry them beside it so that a resumed fit takes exactly the uninterrupted fit's steps)."""
        return [getattr(self, f"_power_v{i}").clone() for i in range(len(self._linear_idx))]

    def load_power_vectors(self, vectors: list[torch.Tensor]) -> None:
        """Put back what :meth:`power_vectors` returned (an empty list leaves a cold start)."""
        for i, v in enumerate(vectors):
            setattr(self, f"_power_v{i}", v.to(self.linears[i].weight.device))

    @torch.no_grad()
    def spectral_norms(
        self, n_iter: int = 2, cold_iter: int = 50, layers: list[int] | None = None
    ) -> list[torch.Tensor]:
        """Power-iteration estimates of ``|W_k|_2`` for k in ``layers`` (default 0..L-1), as 0-dim tensors
        (lower bounds that converge to the norm).

        The right singular vector estimates persist between calls (warm start, ``n_iter`` iterations);
        a first call, or one after a change of shape, dtype or device, runs ``cold_iter`` iterations from a
        fixed-seed random vector."""
        norms = []
        lins = self.linears
        for i in range(len(lins)) if layers is None else layers:
            w = lins[i].weight.detach()
            v = getattr(self, f"_power_v{i}")
            iters = n_iter
            if v.shape != (w.shape[1],) or v.dtype != w.dtype or v.device != w.device:
                gen = torch.Generator().manual_seed(1234 + i)
                v = torch.randn(w.shape[1], generator=gen, dtype=w.dtype).to(w.device)
                v = v / v.norm()
                iters = max(n_iter, cold_iter)
            sigma = v.new_zeros(())
            for _ in range(iters):
                u = w @ v
                u = u / u.norm().clamp_min(1e-30)
                v = w.t() @ u
                sigma = v.norm()
                v = v / sigma.clamp_min(1e-30)
            setattr(self, f"_power_v{i}", v)
            norms.append(sigma)
        return norms

    def damping_coefficients(
        self, damping: str | float = "auto", n_iter: int = 2
    ) -> list[torch.Tensor | float]:
        """kappa_k for the hidden blocks k = 1..L-1.

        ``"auto"`` (and ``"safe"``, where it is the fall-back): ``1.05 * max(0, |W_k|_2^2 - 1) / 2`` (monotone
        descent); ``"none"``: 0 (plain LPOM step); a number >= 0: that constant for every block."""
        if self.depth < 2:
            return []
        if damping in ("auto", "safe"):
            norms = self.spectral_norms(n_iter, layers=list(range(1, self.depth)))
            return [DAMPING_SAFETY * 0.5 * (s.square() - 1).clamp_min(0) for s in norms]
        if damping == "none":
            return [0.0] * (self.depth - 1)
        return [float(damping)] * (self.depth - 1)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def infer(
        self,
        x: torch.Tensor | None,
        c: float | torch.Tensor = 0.0,
        r: torch.Tensor | None = None,
        g: list[torch.Tensor] | None = None,
        n_sweeps: int = 20,
        damping: str | float = "auto",
        n_inner: int = 1,
        init: list[torch.Tensor] | None = None,
        first_pre: torch.Tensor | None = None,
        power_iters: int = 2,
        trace: list[torch.Tensor] | None = None,
    ) -> LiftedInference:
        """Minimise ``Phi(z) = U(z; x) + sum_k g_k^T z_k + c/2|z_L|^2 - r^T z_L`` over z_1..z_L, batched.

        Forward-pass initialisation (or ``init``), then ``n_sweeps`` top-down block-coordinate passes
        (k = L, ..., 1): the exact output update ``z_L <- (a_L - g_L + r) / (1 + c)`` and ``n_inner`` damped
        hidden steps ``z_k <- relu((a_k - g_k + kappa_k z_k + W_k^T (z_{k+1} - f_{k+1}(W_k z_k + b_k)))
        / (1 + kappa_k))``. With ``damping="auto"`` no block update increases Phi (see the module docstring).

        Args:
            x: input batch (B, ...), as for ``forward`` (may be None when ``init`` is given).
            c: scalar, or per-sample (B, 1) tensor; ``1 + c > 0`` is required (else Phi is unbounded below).
            r: (B, n_L) tensor or None (0).
            g: ``[g_1, ..., g_L]`` with the shapes of z_1..z_L, or None.
            n_sweeps: number of top-down passes (>= 0).
            damping: ``"safe"``: per sample, the plain LPOM step where it does not increase the block
                objective (checked exactly), else the ``"auto"`` damped step; ``"auto"``, ``"none"`` or a
                constant kappa >= 0 (see :meth:`damping_coefficients`).
            n_inner: hidden steps per block visit.
            init: starting states ``[z_0, ..., z_L]`` (e.g. a forward pass already computed); default: the
                forward pass of ``x``. Not modified.
            first_pre: ``a_1 = W_0 z_0 + b_0`` of the batch if already computed (see
                :meth:`forward_with_input_drive`).
            power_iters: power iterations per call for ``damping="auto"`` (warm-started).
            trace: if a list, Phi (per sample) is appended after the initialisation and after every block
                update (for tests and diagnostics; costs one potential evaluation per block).

        Returns:
            :class:`LiftedInference` with the states, the residual (max |change| in the last sweep) and kappa.
        """
        if isinstance(c, torch.Tensor):
            if not bool((1 + c > 0).all()):
                raise ConfigError(f"inference needs 1 + c > 0 (Phi is unbounded below otherwise), got c={c}")
        elif not 1 + c > 0:
            raise ConfigError(f"inference needs 1 + c > 0 (Phi is unbounded below otherwise), got c={c}")
        if init is None and x is None:
            raise ValueError("infer needs the input x or initial states init")
        # a new list; its tensors are replaced, never modified in place, so init stays untouched
        states = list(init) if init is not None else self.forward_states(x)
        lins = self.linears
        depth = len(lins)
        kappa = self.damping_coefficients(damping, power_iters)
        g = list(g) if g is not None else [None] * depth
        if len(g) != depth or (g[0] is not None and any(gk is None for gk in g)):
            raise ConfigError(f"inference needs one g tensor per layer z_1..z_{depth} (or g=None)")

        def record() -> None:
            if trace is not None:
                trace.append(self.objective(states, c, r, None if g[0] is None else g))

        # the output update's constant part and the first layer's drive never change during inference
        out_shift = None if r is None else r.expand_as(states[-1])
        if g[-1] is not None:
            out_shift = -g[-1] if out_shift is None else out_shift - g[-1]
        out_scale = 1 / (1 + c)
        if out_shift is not None:
            out_shift = out_shift * out_scale  # z_L <- a_L / (1 + c) + (r - g_L) / (1 + c)
        kap = [float(k) for k in kappa]  # Python numbers: scalars of addmm (one host sync per call)
        if first_pre is None:  # a_1 = W_0 z_0 + b_0 (z_0 is fixed)
            first_pre = F.linear(states[0], lins[0].weight, lins[0].bias)
        pre_first = first_pre
        drive_first = pre_first if g[0] is None else pre_first - g[0]
        record()
        safe = damping == "safe"
        # cache[j] = W_{j-1} z_{j-1} + b_{j-1} for the current z_{j-1} (None: recompute); cache[1] = a_1
        cache: list[torch.Tensor | None] = [None] * (depth + 1)
        cache[1] = pre_first

        def pre(j: int) -> torch.Tensor:
            if cache[j] is None:
                cache[j] = F.linear(states[j - 1], lins[j - 1].weight, lins[j - 1].bias)
            return cache[j]  # type: ignore[return-value]

        residual = states[-1].new_zeros(())
        for sweep in range(n_sweeps):
            last = sweep == n_sweeps - 1
            changes = []
            # output block: exact minimiser; a_L is then reused as W_{L-1} z_{L-1} + b_{L-1} below
            pre_next = pre(depth)
            if out_shift is None:
                new = pre_next * out_scale
            elif isinstance(out_scale, torch.Tensor):
                new = torch.addcmul(out_shift, pre_next, out_scale)
            else:
                new = torch.add(out_shift, pre_next, alpha=out_scale)
            if last:
                changes.append((new - states[-1]).abs().amax())
            states[-1] = new
            record()
            for k in range(depth - 1, 0, -1):  # hidden blocks, top-down
                w_k, b_k, kappa_k = lins[k].weight, lins[k].bias, kap[k - 1]
                inv = 1.0 / (1.0 + kappa_k)
                if k == 1:
                    drive = drive_first
                else:
                    pre_k = pre(k)
                    drive = pre_k if g[k - 1] is None else pre_k - g[k - 1]
                old = states[k]
                for _ in range(n_inner):
                    pre_next = pre(k + 1)  # W_k z_k + b_k
                    z_cur = states[k]
                    err = states[k + 1] - (pre_next if k + 1 == depth else F.relu(pre_next))
                    if safe:
                        # the LPOM step (kappa = 0) for the samples where it does not increase
                        # J_k(z) = 1/2|z|^2 - z^T drive + G*_{k+1}(p) - z_{k+1}^T p (+ const),
                        # p = W_k z + b_k; the damped step (guaranteed descent) for the others
                        v = torch.addmm(drive, err, w_k)
                        z_try = F.relu(v)
                        p_try = F.linear(z_try, w_k, b_k)
                        f_try = p_try if k + 1 == depth else F.relu(p_try)
                        f_cur = states[k + 1] - err  # f_{k+1}(p) at the current z_k
                        gain = (z_try - z_cur) * (0.5 * (z_try + z_cur) - drive)
                        gain = gain.sum(1) + 0.5 * ((f_try * f_try).sum(1) - (f_cur * f_cur).sum(1))
                        ok = gain - (states[k + 1] * (p_try - pre_next)).sum(1) <= 0
                        if bool(ok.all()):
                            states[k], cache[k + 1] = z_try, p_try
                        else:
                            damped = torch.add(v, z_cur, alpha=kappa_k).mul_(inv).relu_()
                            states[k], cache[k + 1] = torch.where(ok[:, None], z_try, damped), None
                    else:
                        base = drive if kappa_k == 0 else torch.add(drive, z_cur, alpha=kappa_k)
                        # relu((drive + kappa z + err W_k) / (1 + kappa)), the scaling folded into addmm
                        states[k] = torch.addmm(base, err, w_k, beta=inv, alpha=inv).relu_()
                        cache[k + 1] = None
                    record()
                if last:
                    changes.append((states[k] - old).abs().amax())
            if last:
                residual = torch.stack(changes).amax()
        return LiftedInference(states=states, residual=residual, kappa=kappa)


def check_damping(value: object, field: str) -> str | float:
    """Validate a damping option (``"safe"``, ``"auto"``, ``"none"`` or a number >= 0), naming ``field``."""
    if value in ("safe", "auto", "none"):
        return value  # type: ignore[return-value]
    if not isinstance(value, str):
        with contextlib.suppress(ConfigError):
            return non_negative(field, value)
    raise ConfigError(f"{field} must be 'safe', 'auto', 'none' or a number >= 0, got {value!r}")
