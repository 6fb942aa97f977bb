"""The official AutoAttack (Croce & Hein, ICML 2020; package ``pyautoattack`` 0.2.0) as a lit_robust
:class:`~lit_robust.attacks.base.Attack`: the RobustBench standard, ``version="standard"``:

    APGD-CE   100 iterations, 1 restart           APGD-T   9 target classes x 100 iterations
    FAB-T     9 target classes x 100 iterations   Square   5000 queries, p_init 0.8
    each component only on the points still classified correctly; seed 0

AutoAttack's own sanity checks run on every call (randomised defence, logits that look like
probabilities, dynamic models, too few classes, zero gradients; Square beating the white-box attacks is
checked here from the breakdown, with AutoAttack's threshold, since the components run one call each);
what they report becomes a Python warning and is kept in ``last_warnings`` for the report.
``steps``/``square_queries`` below the standard budgets are for tests and are named in
:attr:`AutoAttack.implementation` ("reduced budgets"), never reported as AutoAttack. ``components`` picks
some of the four (in the standard order) and ``square_restarts`` gives Square restarts: with more queries
this is the check the Square warning asks for (``components=["square"], square_queries=20000,
square_restarts=2``), reported as a custom AutoAttack.

The components run one at a time in the standard order through the official code (``attacks_to_run`` of
one name on the points still robust, exactly what ``run_standard_evaluation`` does in one call), so that
``state_dir`` can hold a state file per batch of points (``autoattack_<digest>.json``: the components done,
the points still robust), written after every component: an interrupted evaluation run again with the
same folder skips the components that finished, and the points they broke stay broken (their verdict
comes from the state, :attr:`AutoAttack.last_robust`). pyautoattack 0.2.0's own ``state_path`` cannot be
used for this: its state file stores the set of attacks as a string and refuses itself on reload.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import warnings
from pathlib import Path

import torch

from lit_robust.attacks.base import Attack
from lit_robust.checkpoint_io import atomic_file
from lit_robust.errors import ConfigError
from lit_robust.validate import integer

__all__ = ["AutoAttack"]


STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")
_AFTER = re.compile(r"robust accuracy after ([A-Z-]+): ([\d.]+)%")


#: AutoAttack's threshold for Square beating the white-box components (a fraction of the points)
SQUARE_ALPHA = 0.002


def _warn(messages: list[str], message: str) -> None:
    """Record a sanity-check finding (for the report) and raise it as a Python warning."""
    if message not in messages:
        messages.append(message)
    warnings.warn(f"AutoAttack's check: {message}", stacklevel=3)


class _Collect(logging.Handler):
    """AutoAttack's log: warnings (its sanity checks) are recorded and become Python warnings; the robust
    accuracy after each component is kept for the breakdown."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.after: dict[str, float] = {}
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            _warn(self.messages, message)
        elif found := _AFTER.search(message):
            self.after[found.group(1).lower()] = float(found.group(2)) / 100


def square_check(broken_by_square: int, n: int) -> str | None:
    """AutoAttack's check that the black-box Square broke no more than ``SQUARE_ALPHA`` of the points the
    white-box components left, made here from the breakdown: the official check compares the robust
    accuracies within one ``run_standard_evaluation`` call, and the components run one call each."""
    if n == 0 or broken_by_square / n <= SQUARE_ALPHA:
        return None
    return (
        f"Square (black-box) broke {broken_by_square} of {n} points ({broken_by_square / n:.2%}) that "
        "APGD-CE, APGD-T and FAB-T had left: the white-box attacks under-attack this model (gradient "
        "masking?), so this robust accuracy is unreliable; rerun Square with more queries and restarts, "
        "or an adaptive attack"
    )


class AutoAttack(Attack):
    """The official standard AutoAttack (see the module docstring).

    Args:
        eps, norm: threat model (None: the method's); L_inf or L_2.
        steps: iterations of APGD-CE, APGD-T and FAB-T (100: the standard; fewer only for tests).
        square_queries: Square's query budget (5000: the standard).
        components: the components to run, a subset of ``apgd-ce``, ``apgd-t``, ``fab-t``, ``square``
            (run in that order; None: all four, the standard).
        square_restarts: Square's random restarts (1: the standard).
        seed: AutoAttack's seed (0).
        state_dir: folder for AutoAttack's state files (resumable evaluation); None keeps no state.

    After a call, ``last_breakdown`` maps each component to the number of points it broke,
    ``last_robust`` holds the per-point verdict (True: survived every component) and ``last_warnings``
    the sanity checks' findings (also raised as Python warnings; ``evaluate`` reports them), including
    Square breaking more than 0.2% of the points after the white-box components.
    """

    def __init__(
        self,
        eps: float | None = None,
        norm: str | None = None,
        steps: int = 100,
        square_queries: int = 5000,
        components: list[str] | None = None,
        square_restarts: int = 1,
        seed: int = 0,
        state_dir: str | None = None,
    ) -> None:
        super().__init__(eps=eps, norm=norm, eval_mode=True, seed=seed)
        self.steps = integer("AutoAttack.steps", steps)
        self.square_queries = integer("AutoAttack.square_queries", square_queries)
        self.square_restarts = integer("AutoAttack.square_restarts", square_restarts)
        chosen = STANDARD if components is None else tuple(components)
        unknown = sorted(set(chosen) - set(STANDARD))
        if unknown or not chosen:
            raise ConfigError(
                f"AutoAttack.components must be a non-empty subset of {list(STANDARD)}, got {components!r}"
            )
        self.components = tuple(c for c in STANDARD if c in chosen)
        self.state_dir = state_dir
        self.last_breakdown: dict[str, int] = {}
        self.last_robust: torch.Tensor | None = None
        self.last_warnings: list[str] = []

    @property
    def standard(self) -> bool:
        return (
            self.steps == 100
            and self.square_queries == 5000
            and self.components == STANDARD
            and self.square_restarts == 1
        )

    @property
    def implementation(self) -> str:
        """Who wrote the attack code, for reports."""
        from importlib.metadata import version

        package = f"pyautoattack {version('pyautoattack')}"
        if self.components == STANDARD and self.square_restarts == 1:
            budgets = (
                "standard"
                if self.standard
                else f"reduced budgets: {self.steps} it., {self.square_queries} queries"
            )
            return f"official AutoAttack ({package}, version='standard', {budgets})"
        parts = []
        if self.components != STANDARD:
            parts.append("components " + ", ".join(self.components))
        if any(c != "square" for c in self.components):
            parts.append(f"{self.steps} it.")
        if "square" in self.components:
            parts.append(f"Square {self.square_queries} queries x {self.square_restarts} restarts")
        kind = "custom" if self.steps >= 100 and self.square_queries >= 5000 else "reduced budgets"
        return f"official AutoAttack components ({package}, {kind}: {'; '.join(parts)})"

    def _state_path(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Path | None:
        """The state file of this evaluation: named by a digest of the model's weights, the images, the
        labels and the settings, so that another model (or the same run retrained) never resumes it."""
        if self.state_dir is None:
            return None
        digest = hashlib.sha1()
        for name, t in model.state_dict().items():
            if isinstance(t, torch.Tensor):
                digest.update(name.encode())
                digest.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        for t in (x, y):
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        settings = [self.eps, self.norm, self.steps, self.square_queries, self.seed]
        if not self.standard:  # (standard runs keep the state-file names of earlier versions)
            settings += [",".join(self.components), self.square_restarts]
        digest.update("|".join(map(str, settings)).encode())
        folder = Path(self.state_dir)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"autoattack_{digest.hexdigest()[:16]}.json"

    def perturb(self, model, x, y, generator=None, target=None):
        if target is not None:
            raise ConfigError("AutoAttack is untargeted (its APGD-T and FAB-T choose their own targets)")
        try:
            from pyautoattack import AutoAttack as Official
        except ImportError as err:
            hint = "pip install pyautoattack==0.2.0"
            raise ConfigError(f"AutoAttack needs the official package: {hint} ({err})") from None
        norm = {"inf": "Linf", "2": "L2"}[self.norm]
        official = Official(
            model,
            eps=float(self.eps),
            norm=norm,
            version="standard",
            device=x.device,
            seed=int(self.seed or 0),
        )
        if not self.standard:
            official.apgd.n_iter = official.apgd_targeted.n_iter = official.fab.n_iter = self.steps
            official.square.n_queries = self.square_queries
            official.square.n_restarts = self.square_restarts
        collect = _Collect()
        official.logger = logging.getLogger(f"lit_robust.autoattack.{id(self)}")
        official.logger.handlers[:] = [collect]
        official.logger.setLevel(logging.DEBUG)
        official.logger.propagate = False
        for component in (official.apgd, official.apgd_targeted, official.fab, official.square):
            if hasattr(component, "logger"):  # APGD's zero-gradient check logs through its own logger
                component.logger = official.logger
        state = self._state_path(model, x, y)
        saved = json.loads(state.read_text()) if state is not None and state.is_file() else {}
        done: list[str] = saved.get("done", [])
        with torch.no_grad():
            robust = self.logits(model, x).argmax(1) == y
        if "robust" in saved:
            robust = torch.tensor(saved["robust"], dtype=torch.bool, device=x.device)
        x_adv, self.last_breakdown = (
            x.clone(),
            {**dict.fromkeys(self.components, 0), **saved.get("breakdown", {})},
        )
        devices = [x.device] if x.device.type == "cuda" else []
        for name in self.components:  # the standard sequence, one component at a time, on the points left
            if name in done or not robust.any():
                continue
            idx = robust.nonzero().squeeze(1)
            official.attacks_to_run = [name]
            with torch.random.fork_rng(devices=devices):  # the components reseed the global RNG
                cand, _ = official.run_standard_evaluation(x[idx], y[idx], batch_size=len(idx))
            cand = self.clip(x[idx], cand.detach().to(x.dtype))
            with torch.no_grad():
                fooled = self.logits(model, cand).argmax(1) != y[idx]
            x_adv[idx[fooled]] = cand[fooled]
            robust[idx[fooled]] = False
            self.last_breakdown[name] = int(fooled.sum())
            done.append(name)
            if state is not None:  # after every component: a kill loses at most the running one
                record = {"done": done, "robust": robust.tolist(), "breakdown": self.last_breakdown}
                with atomic_file(state, "w") as f:
                    json.dump(record, f)
        self.last_robust = robust.clone()
        white_box = len(self.components) > 1 and "square" in self.components
        if white_box and (message := square_check(self.last_breakdown.get("square", 0), len(y))) is not None:
            _warn(collect.messages, message)
        self.last_warnings = collect.messages
        return x_adv
