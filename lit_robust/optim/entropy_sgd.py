"""EntropySGD (Chaudhari et al., ICLR 2017, "Entropy-SGD: biasing gradient descent into wide valleys") as
used for adversarial training by Kanai, Yamada, Takahashi, Yamanaka, Ida, "Smoothness Analysis of
Adversarial Training" (first order, and the second-order variant of their Algorithm 1, App. D.1).

EntropySGD minimises the local-entropy loss
-F(theta) = -log int exp(-L(theta') - gamma/2 ||theta - theta'||^2) dtheta' (eq. 10), whose gradient is
-grad F = gamma (theta - E_p[theta']) (eq. 11) under the Gibbs measure
p_theta(theta') ~ exp(-L(theta') - gamma/2 ||theta - theta'||^2) (eq. 12). One outer step (Algorithm 1):

    theta', theta_bar <- theta ;  xi_bar <- theta * theta                                      (lines 2-3)
    for l = 1..L:   (one fresh mini-batch per step; the closure runs the attack and the backward)
        g       <- grad_theta' loss(theta')  [+ wd_s theta', Nesterov momentum mu_s: code options]
        dtheta' <- g - gamma (theta - theta')                              (line 10; sign: ambiguity A1)
        theta'  <- theta' - eta' dtheta' + sqrt(eta') eps_E N(0, I)                           (line 11)
        theta_bar <- (1 - alpha) theta_bar + alpha theta'                                       (line 12)
        xi_bar    <- (1 - alpha) xi_bar + alpha theta' * theta'                  (line 13, order 2 only)
    G <- (theta - theta_bar)              order 1, outer_grad_scale "one" (reference code; A2)
         gamma (theta - theta_bar)        order 1, outer_grad_scale "gamma" (eq. 11)
         gamma h * (theta - theta_bar)    order 2, h_j = 1 / (gamma - gamma^2 var_j),     (lines 15-18)
                                          var_j = clamp(xi_bar_j - theta_bar_j^2, 0, kappa / gamma)
    theta <- theta - eta * SGD-momentum(G + wd theta)                        (line 18 + A4: momentum, wd)

gamma h = 1 / (1 - gamma var), so the order-2 direction is (theta - theta_bar) / (1 - gamma var): it is
exactly the order-1 "one" direction where the variance is 0 and larger by 1 / (1 - gamma var_j) elsewhere.

The optimizer's ``step(closure)`` runs the whole chain: the closure is called up to L times; each call
must take a FRESH mini-batch, zero the gradients, evaluate the loss at the current parameters (which hold
theta' during the chain) and back-propagate, returning the loss. A closure that returns ``None`` ends the
chain early (no data left, e.g. at the end of an epoch: ambiguity A7); the outer update then uses the
steps taken so far (none: the weights are left unchanged). After ``step`` the parameters hold theta again.

The resolutions of the spec's ambiguities are options (defaults in brackets): ``outer_grad_scale``
["one"] (A2), ``alpha_convention`` ["paper": alpha weighs the new sample] (A3), SGLD momentum and weight
decay [0.9 Nesterov, = weight_decay, buffer reset every chain] (A4), ``sgld_lr_follows_lr`` [False] (A9),
``noise_convention`` ["paper": sqrt(eta') eps_E; "code": sqrt(2 eta') eps_E] (A17), ``var_clamp`` kappa
[0.5] (A18), ``scoping`` gamma_t = gamma (1 + scoping)^t [0] (sec. 4.1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer

from lit_robust.errors import ConfigError
from lit_robust.validate import choice, integer, number

OUTER_GRAD_SCALES = ("one", "gamma")
CONVENTIONS = ("paper", "code")


# ---------------------------------------------------------------------------------------------- pure maths
def noise_std(sgld_lr: float, thermal_noise: float, convention: str = "paper") -> float:
    """Std of the SGLD noise increment: sqrt(eta') eps_E (paper, line 11) or sqrt(2 eta') eps_E (reference
    code, which adds eps / sqrt(0.5 eta') N(0, I) to dtheta' before multiplying by eta')."""
    return math.sqrt((2.0 if convention == "code" else 1.0) * sgld_lr) * thermal_noise


def ema_weight(alpha: float, convention: str = "paper") -> float:
    """Weight of the NEW sample in the running averages: alpha (Algorithm 1 line 12) or 1 - alpha (the
    reference code's ``mu <- alpha mu + (1 - alpha) theta'``)."""
    return alpha if convention == "paper" else 1.0 - alpha


def chain_variance(mean: torch.Tensor, mean_sq: torch.Tensor, gamma: float, kappa: float) -> torch.Tensor:
    """Diagonal of the Gibbs covariance estimated by the chain: var_j = xi_bar_j - theta_bar_j^2, clamped to
    [0, kappa / gamma] (it can come out negative by cancellation; var -> 1 / gamma would blow h up)."""
    return (mean_sq - mean * mean).clamp_(0.0, kappa / gamma)


def outer_direction(
    theta: torch.Tensor,
    mean: torch.Tensor,
    gamma: float,
    order: int = 1,
    scale: str = "one",
    var: torch.Tensor | None = None,
) -> torch.Tensor:
    """The outer pseudo-gradient G (before weight decay and momentum):

    order 1:  G = c (theta - theta_bar),  c = 1 (``scale="one"``, reference code) or gamma (eq. 11);
    order 2:  G = gamma h * (theta - theta_bar) = (theta - theta_bar) / (1 - gamma var),
              h = 1 / (gamma - gamma^2 var)   (Algorithm 1 lines 15-18; ``var`` from :func:`chain_variance`).
    """
    diff = theta - mean
    if order == 2:
        return diff / (1.0 - gamma * var)
    return diff * gamma if scale == "gamma" else diff


# ---------------------------------------------------------------------------------------------- optimizer
class EntropySGD(Optimizer):
    """EntropySGD, first or second order, with an SGLD chain of L closure calls per ``step``.

    Args:
        params: parameters (or parameter groups; every hyperparameter below can be set per group).
        lr: outer learning rate eta (paper 0.1); the one LR schedulers change.
        gamma: scope gamma (paper 0.03).
        L: Langevin (SGLD) steps per outer step; each consumes one mini-batch (paper 20 or 30).
        sgld_lr: SGLD step size eta' (paper 0.1; fixed, see ``sgld_lr_follows_lr``).
        thermal_noise: eps_E, scale of the SGLD noise (paper 1e-4); 0 turns the noise off.
        alpha: running-average weight (paper 0.75; 0.3 for TRADES+AWP+EnSGD), see ``alpha_convention``.
        order: 1 (EnSGD) or 2 (2ndEnSGD, Algorithm 1).
        momentum, nesterov, weight_decay: SGD of the outer step (paper: 0.9, Nesterov as in Chaudhari's
            code, 5e-4).
        sgld_momentum, sgld_nesterov, sgld_weight_decay: applied to the mini-batch gradient inside the
            chain, with a buffer reset every outer step (reference code: 0.9, Nesterov, = weight_decay;
            Algorithm 1 has none: set 0). ``sgld_weight_decay=None`` means ``weight_decay``.
        outer_grad_scale: order 1 only: ``"one"`` G = theta - theta_bar (reference code, default) or
            ``"gamma"`` G = gamma (theta - theta_bar) (eq. 11).
        alpha_convention: ``"paper"`` theta_bar <- (1 - alpha) theta_bar + alpha theta' or ``"code"``
            theta_bar <- alpha theta_bar + (1 - alpha) theta'.
        noise_convention: ``"paper"`` sqrt(eta') eps_E or ``"code"`` sqrt(2 eta') eps_E per step.
        var_clamp: kappa < 1: the order-2 variance is clamped to [0, kappa / gamma].
        scoping: gamma_t = gamma (1 + scoping)^t with t the number of outer steps taken (0: constant).
        sgld_lr_follows_lr: scale eta' by lr / initial_lr (the scheduler's decay) instead of keeping it.
        seed: seed of the optimizer's own generator for the thermal noise (its state is part of
            ``state_dict()``); None draws the seed from torch's global RNG (so ``seed_everything`` fixes it).

    ``step(closure, plain=True)`` takes one plain SGD step on one closure call instead (heavy-ball momentum
    ``momentum`` without Nesterov, ``weight_decay``, ``lr``; its own buffer): the warm-up epochs and the
    "(tuned)" switch of the paper. A buffer is reset whenever its mode (chain or plain) is re-entered.
    After each chain ``last_stats`` holds diagnostics (tensors, no host sync): ``drift``
    ||theta - theta_bar||, ``chain_dist`` ||theta - theta'_L||, ``steps``, ``gamma``, ``noise_std``; order 2
    also ``var_mean``, ``var_max``, ``h_min``, ``h_max``, ``clamped`` (count of var_j at the upper clamp) and
    ``lipschitz_proxy`` gamma + gamma^2 ||var||_2.
    """

    def __init__(
        self,
        params,
        lr: float = 0.1,
        gamma: float = 0.03,
        L: int = 20,
        sgld_lr: float = 0.1,
        thermal_noise: float = 1e-4,
        alpha: float = 0.75,
        order: int = 1,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 5e-4,
        sgld_momentum: float = 0.9,
        sgld_nesterov: bool = True,
        sgld_weight_decay: float | None = None,
        outer_grad_scale: str = "one",
        alpha_convention: str = "paper",
        noise_convention: str = "paper",
        var_clamp: float = 0.5,
        scoping: float = 0.0,
        sgld_lr_follows_lr: bool = False,
        seed: int | None = None,
    ) -> None:
        L = integer("EntropySGD.L", L)
        order = choice("EntropySGD.order", order, (1, 2))
        wd = number("EntropySGD.weight_decay", weight_decay, 0.0)
        defaults = dict(
            lr=number("EntropySGD.lr", lr, 0.0),
            gamma=number("EntropySGD.gamma", gamma, 0.0, low_open=True),
            L=L,
            sgld_lr=number("EntropySGD.sgld_lr", sgld_lr, 0.0, low_open=True),
            thermal_noise=number("EntropySGD.thermal_noise", thermal_noise, 0.0),
            alpha=number("EntropySGD.alpha", alpha, 0.0, 1.0, low_open=True),
            order=order,
            momentum=number("EntropySGD.momentum", momentum, 0.0, 1.0),
            nesterov=bool(nesterov),
            weight_decay=wd,
            sgld_momentum=number("EntropySGD.sgld_momentum", sgld_momentum, 0.0, 1.0),
            sgld_nesterov=bool(sgld_nesterov),
            sgld_weight_decay=wd
            if sgld_weight_decay is None
            else number("EntropySGD.sgld_weight_decay", sgld_weight_decay, 0.0),
            outer_grad_scale=choice("EntropySGD.outer_grad_scale", outer_grad_scale, OUTER_GRAD_SCALES),
            alpha_convention=choice("EntropySGD.alpha_convention", alpha_convention, CONVENTIONS),
            noise_convention=choice("EntropySGD.noise_convention", noise_convention, CONVENTIONS),
            var_clamp=number("EntropySGD.var_clamp", var_clamp, 0.0, 1.0, low_open=True),
            scoping=number("EntropySGD.scoping", scoping, 0.0),
            sgld_lr_follows_lr=bool(sgld_lr_follows_lr),
            outer_steps=0,  # t of the scoping schedule (a counter, saved with the groups)
            mode="chain",
        )
        if defaults["var_clamp"] >= 1.0:
            raise ConfigError(
                f"EntropySGD.var_clamp must be < 1 (var -> 1/gamma makes h infinite), got {var_clamp!r}"
            )
        super().__init__(params, defaults)
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self.seed = integer("EntropySGD.seed", seed, None)
        self._generator: torch.Generator | None = None
        self._rng_state: torch.Tensor | None = None  # loaded, applied when the generator is created
        self.last_stats: dict[str, torch.Tensor | float | int] = {}

    # ------------------------------------------------------------------ state
    def _rng(self, device: torch.device) -> torch.Generator:
        """The thermal-noise generator, created on the parameters' device at first use."""
        if self._generator is None or self._generator.device.type != device.type:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
            if self._rng_state is not None:
                self._generator.set_state(self._rng_state)
                self._rng_state = None
        return self._generator

    def state_dict(self) -> dict[str, Any]:
        """Torch's optimizer state (momentum buffers, groups with their counters) plus the noise generator:
        ``seed`` and ``rng_state`` (None before the first noisy step)."""
        state = super().state_dict()
        rng = self._generator.get_state() if self._generator is not None else self._rng_state
        state["entropy_sgd"] = {"seed": self.seed, "rng_state": None if rng is None else rng.clone()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("entropy_sgd", None)
        super().load_state_dict(state_dict)
        if extra is not None:
            self.seed = int(extra["seed"])
            self._generator = None
            rng = extra["rng_state"]
            self._rng_state = None if rng is None else rng.detach().to("cpu", torch.uint8).clone()

    # ------------------------------------------------------------------ steps
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, plain: bool = False) -> Any:
        """One outer EntropySGD step (L closure calls), or with ``plain`` one SGD step (one call).

        Returns the mean of the losses the closure returned (None if it returned none)."""
        if closure is None:
            raise RuntimeError("EntropySGD.step needs a closure that takes a fresh batch and back-propagates")
        mode = "plain" if plain else "chain"
        for group in self.param_groups:
            if group["mode"] != mode:
                key = "plain_momentum_buffer" if plain else "momentum_buffer"
                for p in group["params"]:
                    self.state[p].pop(key, None)
                group["mode"] = mode
        return self._plain_step(closure) if plain else self._chain_step(closure)

    def _plain_step(self, closure: Callable[[], Any]) -> Any:
        with torch.enable_grad():
            loss = closure()
        if loss is None:
            return None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    d = (
                        p.grad.add(p, alpha=group["weight_decay"])
                        if group["weight_decay"]
                        else p.grad.clone()
                    )
                    d = self._momentum(self.state[p], "plain_momentum_buffer", d, group["momentum"], False)
                    p.add_(d, alpha=-group["lr"])
        return loss

    def _chain_step(self, closure: Callable[[], Any]) -> Any:
        chains = self._start_chains()
        losses, steps = [], 0
        for _ in range(max(g["L"] for g in self.param_groups)):
            with torch.enable_grad():
                loss = closure()
            if loss is None:
                break
            losses.append(loss.detach() if isinstance(loss, torch.Tensor) else loss)
            steps += 1
            for group in self.param_groups:
                if steps <= group["L"]:
                    self._langevin_step(group, chains)
        self._finish_chains(chains, steps)
        if not losses:
            return None
        return torch.stack([torch.as_tensor(v) for v in losses]).float().mean()

    def _start_chains(self) -> dict[torch.Tensor, dict[str, torch.Tensor]]:
        """theta (anchor), theta_bar and, for order 2, xi_bar, in fp32 (fp64 kept) for every parameter."""
        chains = {}
        for group in self.param_groups:
            for p in group["params"]:
                dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
                theta = p.detach().to(dtype, copy=True)
                chain = {"theta": theta, "mean": theta.clone(), "group": group, "moved": False}
                if group["order"] == 2:
                    chain["mean_sq"] = theta * theta
                chains[p] = chain
        return chains

    def _langevin_step(self, group: dict, chains: dict) -> None:
        gamma = group["gamma"] * (1.0 + group["scoping"]) ** group["outer_steps"]
        lr_s = group["sgld_lr"]
        if group["sgld_lr_follows_lr"] and group.get("initial_lr"):
            lr_s *= group["lr"] / group["initial_lr"]
        std = noise_std(lr_s, group["thermal_noise"], group["noise_convention"])
        w = ema_weight(group["alpha"], group["alpha_convention"])
        for p in group["params"]:
            if p.grad is None:
                continue
            chain = chains[p]
            chain["moved"] = True
            theta_p = p.detach().to(chain["theta"].dtype)
            g = p.grad.to(chain["theta"].dtype)
            if group["sgld_weight_decay"]:
                g = g.add(theta_p, alpha=group["sgld_weight_decay"])
            g = self._momentum(chain, "buf", g, group["sgld_momentum"], group["sgld_nesterov"])
            d = g.add(chain["theta"] - theta_p, alpha=-gamma)  # dtheta' = g - gamma (theta - theta')
            in_place = theta_p.data_ptr() == p.data_ptr()  # p in the chain's dtype: update it directly
            new = p.add_(d, alpha=-lr_s) if in_place else theta_p.add(d, alpha=-lr_s)
            if std > 0:
                gen = self._rng(p.device)
                noise = torch.randn(p.shape, generator=gen, device=gen.device, dtype=new.dtype)
                new.add_(noise.to(p.device), alpha=std)
            if not in_place:
                p.copy_(new)
            chain["mean"].lerp_(new, w)
            if "mean_sq" in chain:
                chain["mean_sq"].lerp_(new * new, w)

    def _finish_chains(self, chains: dict, steps: int) -> None:
        """Restore theta and take the outer step theta <- theta - eta SGD-momentum(G + wd theta)."""
        drift_sq, dist_sq, stats2 = [], [], []
        for p, chain in chains.items():
            theta = chain["theta"]
            if steps and chain["moved"]:
                dist_sq.append((theta - p.detach().to(theta.dtype)).pow(2).sum())
            p.copy_(theta)
        if not steps:
            self.last_stats = {"steps": 0}
            return
        for group in self.param_groups:
            gamma = group["gamma"] * (1.0 + group["scoping"]) ** group["outer_steps"]
            for p in group["params"]:
                chain = chains[p]
                if not chain["moved"]:
                    continue
                theta, var = chain["theta"], None
                if group["order"] == 2:
                    var = chain_variance(chain["mean"], chain["mean_sq"], gamma, group["var_clamp"])
                    stats2.append((var, gamma, group["var_clamp"]))
                G = outer_direction(
                    theta, chain["mean"], gamma, group["order"], group["outer_grad_scale"], var
                )
                drift_sq.append((theta - chain["mean"]).pow(2).sum())
                if group["weight_decay"]:
                    G = G.add(theta, alpha=group["weight_decay"])
                G = self._momentum(self.state[p], "momentum_buffer", G, group["momentum"], group["nesterov"])
                p.add_(G.to(p.dtype), alpha=-group["lr"])
            group["outer_steps"] += 1
        self.last_stats = self._stats(drift_sq, dist_sq, stats2, steps)

    def _stats(self, drift_sq, dist_sq, stats2, steps) -> dict:
        group = self.param_groups[0]
        gamma = group["gamma"] * (1.0 + group["scoping"]) ** (group["outer_steps"] - 1)
        zero = torch.zeros(())
        stats = {
            "steps": steps,
            "gamma": gamma,
            "noise_std": noise_std(group["sgld_lr"], group["thermal_noise"], group["noise_convention"]),
            "drift": torch.stack(drift_sq).sum().sqrt() if drift_sq else zero,
            "chain_dist": torch.stack(dist_sq).sum().sqrt() if dist_sq else zero,
        }
        if stats2:
            var = torch.cat([v.flatten().float() for v, _, _ in stats2])
            g = stats2[0][1]
            h = 1.0 / (g - g * g * var)
            stats.update(
                var_mean=var.mean(),
                var_max=var.max(),
                h_min=h.min(),
                h_max=h.max(),
                clamped=sum((v >= k / gm).sum() for v, gm, k in stats2),
                lipschitz_proxy=g + g * g * var.norm(),
            )
        return stats

    @staticmethod
    def _momentum(store: dict, key: str, d: torch.Tensor, mu: float, nesterov: bool) -> torch.Tensor:
        """Torch-SGD momentum (dampening 0): buf <- mu buf + d (buf = d at first); d + mu buf or buf."""
        if mu == 0:
            return d
        buf = store.get(key)
        if buf is None:
            buf = store[key] = d.clone()
        else:
            buf.mul_(mu).add_(d)
        return d.add(buf, alpha=mu) if nesterov else buf
