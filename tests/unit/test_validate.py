"""The one validators module: every check names the field, refuses booleans and non-finite numbers, and the
configurable classes use it (one message shape everywhere)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from lit_robust import validate
from lit_robust.attacks import APGD, PGD, TRADESKL, CarliniWagnerL2
from lit_robust.callbacks import ConfidenceGap, EpsWarmup, GradientMaskingCheck
from lit_robust.errors import ConfigError
from lit_robust.methods import MART, SBETAAT, TRADES
from lit_robust.nets import MLP, SmallCNN
from lit_robust.optim import EntropySGD


def test_number_intervals_and_messages():
    assert validate.number("a.x", 3) == 3.0 and isinstance(validate.number("a.x", 3), float)
    assert validate.positive("a.x", None, optional=True) is None
    assert validate.probability("a.p", 1) == 1.0
    for bad in (True, "1", math.nan, math.inf, None):
        with pytest.raises(ConfigError, match=r"^a\.x must be a finite number > 0, got "):
            validate.positive("a.x", bad)
    with pytest.raises(ConfigError, match=re.escape("a.p must be a finite number in [0, 1], got 1.5")):
        validate.probability("a.p", 1.5)
    with pytest.raises(ConfigError, match=re.escape("a.r must be a finite number in (0, 1), got 1")):
        validate.number("a.r", 1, 0, 1, low_open=True, high_open=True)
    with pytest.raises(ConfigError, match=re.escape("a.w must be a finite number >= 0, got -1")):
        validate.non_negative("a.w", -1)


def test_integers_lists_and_choices():
    assert validate.integer("a.n", 0, 0) == 0 and validate.integer("a.n", None, optional=True) is None
    for bad in (True, 1.0, "2", 0):
        with pytest.raises(ConfigError, match=r"^a\.n must be an integer >= 1, got "):
            validate.integer("a.n", bad)
    assert validate.integers("a.l", [], allow_empty=True) == []
    with pytest.raises(ConfigError, match=r"a\.l must be a non-empty list of integers"):
        validate.integers("a.l", [])
    with pytest.raises(ConfigError, match=r"a\.l\[1\] must be an integer >= 1, got 0"):
        validate.integers("a.l", [2, 0])
    with pytest.raises(ConfigError, match=r"a\.f must be increasing"):
        validate.floats("a.f", [1.0, 0.5], increasing=True)
    with pytest.raises(ConfigError, match=r"a\.f must be a list of numbers"):
        validate.floats("a.f", "0.5", allow_empty=True)
    with pytest.raises(ConfigError, match=re.escape("a.c must be one of ['x', 'y'], got 'z'")):
        validate.choice("a.c", "z", ("x", "y"))


@pytest.mark.parametrize(
    ("make", "field", "shape"),
    [
        (lambda: PGD(steps=0), "PGD.steps", "an integer >= 1"),
        (lambda: PGD(alpha=-1.0), "PGD.alpha", "a finite number >= 0"),
        (lambda: TRADESKL(init_std=-1.0), "TRADESKL.init_std", "a finite number >= 0"),
        (lambda: APGD(rho=1.0), "APGD.rho", "a finite number in (0, 1)"),
        (lambda: APGD(loss="kl"), "APGD.loss", "one of"),
        (lambda: CarliniWagnerL2(lr=0.0), "CarliniWagnerL2.lr", "a finite number > 0"),
        (lambda: PGD(eps=-0.1), "PGD.eps", "a finite number >= 0"),
        # a loss weight is a weight, not a radius: the message says so
        (lambda: TRADES(net=MLP(), beta=-1.0), "model.beta", "a finite number >= 0"),
        (lambda: MART(net=MLP(), beta=math.nan), "model.beta", "a finite number >= 0"),
        (lambda: SBETAAT(net=MLP(), mu=-1.0), "model.mu", "a finite number >= 0"),
        (lambda: SmallCNN(channels=[32, 0]), "SmallCNN.channels[1]", "an integer >= 1"),
        (lambda: EntropySGD([], gamma=0.0), "EntropySGD.gamma", "a finite number > 0"),
        (lambda: ConfidenceGap(bins=0), "ConfidenceGap.bins", "an integer >= 1"),
        (
            lambda: GradientMaskingCheck(eps_factors=[1.0, 0.5]),
            "GradientMaskingCheck.eps_factors",
            "increasing",
        ),
        (lambda: EpsWarmup(warmup_steps=True), "EpsWarmup.warmup_steps", "an integer >= 1"),
    ],
)
def test_classes_report_the_field(make, field, shape):
    with pytest.raises(ConfigError, match=rf"^{re.escape(field)} must be {re.escape(shape)}"):
        make()


def test_no_private_copies_of_the_checks():
    """The checks live in lit_robust/validate.py only: no other module spells out the bool-is-not-a-number
    test that every copy of a validator had (flags, which are booleans, are allowed)."""
    root = Path(__file__).resolve().parents[2] / "lit_robust"
    copies = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if p.name != "validate.py" and re.search(r"isinstance\(\w+, bool\)\s*(or|and)\b", p.read_text())
    ]
    assert copies == []
