"""AutoAttack (Croce & Hein, ICML 2020) from an independently written implementation, with the ORIGINAL
"standard" budgets, as a lit_robust :class:`~lit_robust.attacks.base.Attack`.

The components come from torchattacks 3.5.1 (MIT licence, the ``[eval]`` extra, installed with
``--no-deps``; see the README). torchattacks' own ``AutoAttack`` class runs 10 iterations per component and
a rescaled Square schedule; here the four attacks are composed with the settings of the reference
``autoattack`` package's ``version="standard"``:

    APGD-CE   100 iterations, 1 restart, rho 0.75
    APGD-T    targeted DLR, 100 iterations, 9 target classes (top-scoring wrong classes), 1 restart
    FAB-T     100 iterations, 9 target classes, 1 restart
    Square    5000 queries, p_init 0.8, margin loss, no rescaled schedule
    seed 0 for every component (the global RNG is restored afterwards)

Each component runs only on the points that are still classified correctly, and a point counts as broken
as soon as one component misclassifies it inside the eps-ball: the result is the per-sample worst case.
"""

from __future__ import annotations

import torch
from torch import nn

from lit_robust.attacks.base import Attack
from lit_robust.errors import ConfigError
from lit_robust.validate import integer

COMPONENTS = ("apgd-ce", "apgd-t", "fab-t", "square")
INSTALL_HINT = (
    "AutoAttack needs the [eval] extra: pip install 'lit_robust[eval]' && "
    "pip install --no-deps torchattacks==3.5.1  (or: make eval-deps)"
)


def _torchattacks():
    try:
        import torchattacks
    except ImportError as err:
        raise ConfigError(f"{INSTALL_HINT} ({err})") from None
    return torchattacks


class AutoAttack(Attack):
    """Standard AutoAttack with the original budgets, implemented by torchattacks' components.

    Args:
        eps, norm: threat model (None: the method's); L_inf or L_2.
        components: which of ``("apgd-ce", "apgd-t", "fab-t", "square")`` to run, in that order.
        steps: iterations of APGD-CE, APGD-T and FAB-T (100 in AutoAttack).
        n_target_classes: target classes of APGD-T and FAB-T (9 in AutoAttack), capped at K-1.
        square_queries: query budget of Square (5000 in AutoAttack).
        seed: seed of every component (AutoAttack uses 0).

    After a call, ``last_breakdown`` maps each component to the number of points it broke.
    """

    def __init__(
        self,
        eps: float | None = None,
        norm: str | None = None,
        components: list[str] | tuple[str, ...] = COMPONENTS,
        steps: int = 100,
        n_target_classes: int = 9,
        square_queries: int = 5000,
        seed: int = 0,
    ) -> None:
        super().__init__(eps=eps, norm=norm, eval_mode=True, seed=seed)
        unknown = [c for c in components if c not in COMPONENTS]
        if unknown or not components:
            raise ConfigError(
                f"components must be a non-empty subset of {list(COMPONENTS)}, got {components!r}"
            )
        self.components = tuple(c for c in COMPONENTS if c in components)
        self.steps = integer("AutoAttack.steps", steps)
        self.n_target_classes = integer("AutoAttack.n_target_classes", n_target_classes)
        self.square_queries = integer("AutoAttack.square_queries", square_queries)
        self.last_breakdown: dict[str, int] = {}

    @property
    def implementation(self) -> str:
        """Who wrote the attack code, for reports."""
        version = getattr(_torchattacks(), "__version__", "?")
        return f"torchattacks {version} ({', '.join(self.components)}; original AutoAttack budgets)"

    def _build(self, model: nn.Module, n_classes: int) -> list[tuple[str, object]]:
        ta = _torchattacks()
        norm = "Linf" if self.norm == "inf" else "L2"
        seed = 0 if self.seed is None else int(self.seed)
        targets = min(self.n_target_classes, n_classes - 1)
        common = {"norm": norm, "eps": self.eps, "seed": seed}
        built: list[tuple[str, object]] = []
        for name in self.components:
            if name == "apgd-ce":
                atk = ta.APGD(model, steps=self.steps, n_restarts=1, loss="ce", rho=0.75, **common)
            elif name == "apgd-t":
                atk = ta.APGDT(model, steps=self.steps, n_restarts=1, rho=0.75, n_classes=n_classes, **common)
                atk.n_target_classes = targets
            elif name == "fab-t":
                atk = ta.FAB(
                    model, steps=self.steps, n_restarts=1, multi_targeted=True, n_classes=n_classes, **common
                )
                atk.n_target_classes = targets
            else:
                atk = ta.Square(
                    model,
                    n_queries=self.square_queries,
                    n_restarts=1,
                    p_init=0.8,
                    loss="margin",
                    resc_schedule=False,
                    **common,
                )
            built.append((name, atk))
        return built

    def perturb(self, model, x, y, generator=None, target=None):
        if target is not None:
            raise ConfigError("AutoAttack is untargeted (its APGD-T and FAB-T choose their own targets)")
        with torch.no_grad():
            logits = self.logits(model, x)
        n_classes = logits.shape[1]
        if n_classes < 4 and "apgd-t" in self.components:
            raise ConfigError(
                f"APGD-T's targeted DLR loss needs at least 4 classes, the model has {n_classes}"
            )
        robust = logits.argmax(dim=1) == y
        x_adv = x.clone()
        self.last_breakdown = dict.fromkeys(self.components, 0)
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the components reseed the global RNG
            for name, atk in self._build(model, n_classes):
                idx = robust.nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                cand = self.clip(x[idx], atk(x[idx], y[idx]).detach().to(x.dtype))
                with torch.no_grad():
                    fooled = self.logits(model, cand).argmax(dim=1) != y[idx]
                x_adv[idx[fooled]] = cand[fooled]
                robust[idx[fooled]] = False
                self.last_breakdown[name] = int(fooled.sum())
        return x_adv
