"""BETA, the BEst Targeted Attack (Robey et al., "Adversarial Training Should Be Cast as a Non-Zero-Sum
Game", ICLR 2024, Algorithm 1).

The attacker maximises the negative margin M(x', y)_j = f(x')_j - f(x')_y, which is positive iff x' is
misclassified (Proposition 1), instead of a surrogate such as cross-entropy. The max over wrong classes is
split into K-1 independent targeted problems, one per class j != y, each with its own iterate and
optimiser state:

    x'_j  ~ U[max(x - eps, 0), min(x + eps, 1)]                       (uniform in the feasible box)
    for t = 1..T:   x'_j <- Proj_{B_eps(x) cap [0,1]^d}( x'_j + OPTIM(grad_{x'_j} M(x'_j, y)_j) )
    j*    = argmax_{j != y} M(x'_j, y)_j                                (at the final iterates: "last")
    x_adv = x'_{j*}

OPTIM is an ascent step on each row's own margin: ``"rmsprop"`` (the paper's choice, for its L_inf
threat model; the default under L_inf; ``torch.optim.RMSprop``
defaults: v <- a v + (1 - a) g^2, step lr g / (sqrt(v) + 1e-8)), ``"adam"`` (``torch.optim.Adam``
defaults) or ``"sign"`` (lr * sign(g) for L_inf, lr * g / ||g||_2 for L_2: the multi-targeted PGD of
Gowal et al., 2019; the default under L_2, where RMSprop's per-coordinate scaling turns the step into a
sign-like direction that is not the L_2 steepest ascent: on the trained linear model of
``tests/unit/test_numbers_mean_their_names.py`` at L_2 eps 0.5, RMSprop leaves 69.7% robust, normalised
steps 28.7%, PGD-L2-20 46.3%, APGD-L2-20 31.3%). A run costs K-1 times the gradient evaluations of a PGD
run with the same steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from lit_robust.attacks.base import Attack
from lit_robust.errors import ConfigError
from lit_robust.validate import choice, integer, non_negative, number

_OPTIMIZERS = ("rmsprop", "adam", "sign")
_ADAM_BETAS = (0.9, 0.999)
_OPT_EPS = 1e-8  # the eps of torch.optim.RMSprop / Adam


@dataclass
class BETAResult:
    """Everything one BETA run found, for a batch of B inputs with K classes.

    Attributes:
        x_adv: (B, ...) the final iterate of the chosen target j* (feasible: in the eps-ball and [0, 1]).
        per_target_x: (B, K-1, ...) the final iterate of every wrong class, feasible.
        targets: (B, K-1) long, the wrong classes j != y in increasing order (row b, column i <-> class
            ``targets[b, i]``); no row with j = y is ever created.
        margins: (B, K-1) the margin f(x'_j)_j - f(x'_j)_y of each target at its own final iterate (model
            in the attack's mode, i.e. eval mode by default). ``margins.max(1) > 0`` iff x_adv is
            misclassified (Proposition 1).
        j_star: (B,) long, the chosen class: argmax of ``margins`` (ties -> the lowest class index).
    """

    x_adv: torch.Tensor
    per_target_x: torch.Tensor
    targets: torch.Tensor
    margins: torch.Tensor
    j_star: torch.Tensor


#: rows per forward/backward pass BETA aims at on a CPU when ``target_chunk`` is None
CPU_ROWS = 256


def _wrong_classes(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, K-1) long: for each label the classes j != y in increasing order."""
    cols = torch.arange(num_classes - 1, device=y.device).expand(y.shape[0], -1)
    return cols + (cols >= y[:, None]).long()


def _target_margins(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Negative margin of the target class, z_t - z_y, per row (eq. 13 of the paper, one entry)."""
    return (logits.gather(1, target[:, None]) - logits.gather(1, y[:, None])).squeeze(1)


class BETA(Attack):
    """BEst Targeted Attack: K-1 targeted margin ascents, keep the class with the largest final margin.

    Args:
        eps: radius of the threat model (None: the method's ``model.eps``).
        norm: ``"inf"`` or ``"2"`` (None: the method's ``model.norm``).
        steps: optimiser steps per target (the paper uses 10 for evaluation and in BETA-AT^10, 30 for
            its RobustBench comparison).
        lr: learning rate of the optimiser; default ``eps / 4`` (2/255 at eps 8/255, the paper's step
            size for every attack), following eps.
        optimizer: ``"rmsprop"`` (paper), ``"adam"`` or ``"sign"``; None (default): ``"rmsprop"`` under
            L_inf (the paper's threat model) and ``"sign"`` (normalised-gradient steps, as PGD-L2) under
            L_2, where RMSprop and Adam, scaling coordinates independently, take sign-like steps that are
            not the L_2 steepest ascent. RMSprop's first step is ``lr / sqrt(1 - rms_alpha)`` per
            coordinate (10 lr with the defaults).
        rms_alpha: RMSprop's smoothing constant, in [0, 1).
        random_start: start every target from a uniform sample of the feasible set (L_inf: the box
            ``[max(x - eps, 0), min(x + eps, 1)]``, independently per target; L_2: uniform in the ball, then
            clipped to [0, 1]); with False every target starts from x.
        target_chunk: optimise at most this many targets per sample at once (memory: a chunk replicates
            the batch ``target_chunk`` times instead of K-1 times). None: all K-1 at once on a GPU, and
            on a CPU as many as keep a pass at most 256 rows (``CPU_ROWS``; a 1152-row pass of the demo
            CNN costs 1.22x nine 128-row passes there, and BETA-3 on a batch of 128 ran 40% faster in
            chunks). Random starts are drawn for all targets up front, so the result is the same as
            without chunks (in eval mode; a model left in train mode with ``eval_mode=False`` sees
            different BatchNorm batches).
        eval_mode: run the model in eval mode during the attack.
        seed: seed of the attack's own generator (None: global RNG).

    ``attack(model, x, y)`` returns ``x_adv``; :meth:`run` returns the whole :class:`BETAResult`. A run
    makes one clean forward pass on the B inputs (to learn K), ``steps`` forward/backward passes on the
    B(K-1) rows and one final forward pass on them for the margins.
    """

    def __init__(
        self,
        eps: float | None = None,
        norm: str | None = None,
        steps: int = 10,
        lr: float | None = None,
        optimizer: str | None = None,
        rms_alpha: float = 0.99,
        random_start: bool = True,
        target_chunk: int | None = None,
        eval_mode: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(eps=eps, norm=norm, eval_mode=eval_mode, seed=seed)
        self.steps = integer("BETA.steps", steps)
        self.lr = non_negative("BETA.lr", lr, optional=True)
        self.optimizer = None if optimizer is None else choice("BETA.optimizer", optimizer, _OPTIMIZERS)
        self.rms_alpha = number("BETA.rms_alpha", rms_alpha, 0.0, 1.0, high_open=True)
        self.random_start = bool(random_start)
        self.target_chunk = integer("BETA.target_chunk", target_chunk, optional=True)

    @staticmethod
    def auto_chunk(batch: int, n_targets: int, device: torch.device) -> int:
        """Targets per pass when ``target_chunk`` is None: all on a GPU; on a CPU, passes of at most
        ``CPU_ROWS`` rows (at least one target), where larger passes fall out of the caches."""
        if device.type != "cpu":
            return n_targets
        return max(1, CPU_ROWS // max(batch, 1))

    @property
    def step_rule(self) -> str:
        """The optimiser used: ``optimizer``, or by default rmsprop under L_inf and sign under L_2."""
        if self.optimizer is not None:
            return self.optimizer
        return "rmsprop" if self.norm == "inf" else "sign"

    @property
    def step_size(self) -> float:
        """``lr``, or ``eps / 4`` when lr is not given (2/255 at eps 8/255)."""
        return self.eps / 4 if self.lr is None else self.lr

    # ------------------------------------------------------------------ public API
    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> BETAResult:
        """Run BETA and return every target's final iterate and margin, the chosen class and ``x_adv``.

        Same guarantees as ``attack(model, x, y)`` (eval mode, grads on inside no_grad/inference_mode,
        fp32 maths, parameters' ``.grad`` untouched, feasible points); ``x_adv`` and ``per_target_x``
        come back in x's dtype, ``x_adv`` equal to ``attack(model, x, y)`` under the same seed."""
        if self.eps is None:
            raise ConfigError(
                "BETA has no eps: pass eps=..., or give the attack to a method, which sets it from model.eps"
            )
        self._check_inputs(x, y)
        with self.running(model):
            x0 = x.detach().to(torch.float32).clone()
            y0 = y.detach().clone()
            res = self._search(model, x0, y0, self._generator(x0.device))
        return BETAResult(
            x_adv=res.x_adv.to(x.dtype),
            per_target_x=res.per_target_x.to(x.dtype),
            targets=res.targets,
            margins=res.margins,
            j_star=res.j_star,
        )

    def perturb(self, model, x, y, generator=None, target=None):
        """``run(...).x_adv``. BETA attacks every wrong class itself, so it takes no ``target``."""
        if target is not None:
            raise ConfigError("BETA optimises every wrong class and keeps the best: it takes no target")
        return self._search(model, x, y, generator).x_adv

    # ------------------------------------------------------------------ search
    def _search(self, model, x, y, generator) -> BETAResult:
        with torch.no_grad():
            k = self.logits(model, x).shape[1]
        if k < 2:
            raise ConfigError(f"BETA needs a model with at least 2 classes, got logits with {k}")
        b, n_t, feat = x.shape[0], k - 1, x.shape[1:]
        targets = _wrong_classes(y, k)  # (B, K-1)
        x_rep = x.unsqueeze(1).expand(b, n_t, *feat)  # views: the (B, K-1) rows of each sample
        # starts for every (sample, target) row are drawn at once, so chunking does not change them
        start = self._init(x_rep.reshape(b * n_t, *feat), generator).view(b, n_t, *feat)
        per_target = torch.empty_like(start)
        margins = torch.empty(b, n_t, device=x.device)
        chunk = min(self.target_chunk or self.auto_chunk(b, n_t, x.device), n_t)
        for c0 in range(0, n_t, chunk):
            c1 = min(c0 + chunk, n_t)
            rows = b * (c1 - c0)
            xr = x_rep[:, c0:c1].reshape(rows, *feat)
            yr = y[:, None].expand(b, c1 - c0).reshape(rows)
            tr = targets[:, c0:c1].reshape(rows)
            x_fin = self._ascend(model, xr, yr, tr, start[:, c0:c1].reshape(rows, *feat))
            with torch.no_grad():
                m = _target_margins(self.logits(model, x_fin), yr, tr)
            per_target[:, c0:c1] = x_fin.view(b, c1 - c0, *feat)
            margins[:, c0:c1] = m.view(b, c1 - c0)
        idx = margins.argmax(dim=1)  # first maximum: ties go to the lowest class index
        arange = torch.arange(b, device=x.device)
        return BETAResult(
            x_adv=per_target[arange, idx],
            per_target_x=per_target,
            targets=targets,
            margins=margins,
            j_star=targets[arange, idx],
        )

    def _init(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Starting points: uniform in the feasible set (see ``random_start``), or x itself."""
        if not self.random_start or self.eps == 0:
            return x.clone()
        if self.norm == "inf":
            lo, hi = self.ball.feasible_box(x)
            u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            return self.clip(x, lo + (hi - lo) * u)
        return self.clip(x, x + self.ball.random_init(x, generator))

    def _ascend(self, model, x, y, target, x_adv) -> torch.Tensor:
        """``steps`` projected ascent steps on each row's margin f(x')_target - f(x')_y.

        The optimiser's update is written into ``x_adv`` in place (``addcdiv``) and projected with one
        clamp under L_inf (the feasible box): the rows are B(K-1), so passes over them are what costs."""
        lr = self.step_size
        rule = self.step_rule
        box = self.ball.feasible_box(x)
        sq = torch.zeros_like(x) if rule != "sign" else None
        mom = torch.zeros_like(x) if rule == "adam" else None
        for t in range(1, self.steps + 1):
            x_adv = x_adv.detach().requires_grad_(True)
            m = _target_margins(self.logits(model, x_adv), y, target)
            # sum, not mean: rows are independent (eval mode) and RMSprop's eps must not swamp tiny grads
            (g,) = torch.autograd.grad(m.sum(), x_adv)
            x_adv = x_adv.detach()
            if rule == "sign":
                x_adv = self.ascend(x, x_adv, g, lr, box)
                continue
            if rule == "rmsprop":
                sq.mul_(self.rms_alpha).addcmul_(g, g, value=1 - self.rms_alpha)
                num, denom, scale = g, sq.sqrt().add_(_OPT_EPS), lr
            else:  # adam
                b1, b2 = _ADAM_BETAS
                mom.mul_(b1).add_(g, alpha=1 - b1)
                sq.mul_(b2).addcmul_(g, g, value=1 - b2)
                num, denom = mom, sq.sqrt().div_(math.sqrt(1 - b2**t)).add_(_OPT_EPS)
                scale = lr / (1 - b1**t)
            x_adv = torch.addcdiv(x_adv, num, denom, value=scale)  # x' + scale * num / denom
            x_adv = x_adv.clamp_(box[0], box[1]) if box is not None else self.clip(x, x_adv)
        return x_adv
