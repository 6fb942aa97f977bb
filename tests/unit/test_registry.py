"""The registry lists everything shipped, and the CLI's help shows it: every RobustClassifier subclass and
every datamodule in ``fit --help``, and a method's own arguments in ``--model.help``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import lit_robust
from lit_robust.attacks import Attack
from lit_robust.cli import main
from lit_robust.data import RobustDataModule
from lit_robust.methods import RobustClassifier
from lit_robust.registry import ATTACKS, DATAMODULES, METHODS, SUITES


def shipped(base: type) -> set[str]:
    """Concrete subclasses of ``base`` defined anywhere in the lit_robust package (every module imported,
    so a class is found even if nothing imports its module)."""
    for info in pkgutil.walk_packages(lit_robust.__path__, "lit_robust."):
        importlib.import_module(info.name)
    found, todo = set(), [base]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("lit_robust.") and not inspect.isabstract(sub):
                found.add(sub.__name__)
    return found


#: shared bases of several shipped datamodules (by file format), not choices of their own
FORMAT_BASES = {"IdxDataModule", "CIFARDataModule"}


@pytest.mark.parametrize(
    ("registry", "base"),
    [(METHODS, RobustClassifier), (DATAMODULES, RobustDataModule), (ATTACKS, Attack)],
    ids=["methods", "datamodules", "attacks"],
)
def test_registry_lists_every_shipped_class(registry, base):
    assert set(registry) == shipped(base) - FORMAT_BASES
    for name in FORMAT_BASES & shipped(base):  # each is the base of a registered datamodule
        assert any(cls.__mro__[1].__name__ == name for cls in registry.values()), name
    assert all(issubclass(cls, base) for cls in registry.values())


def test_suites_are_named():
    assert {"quick", "standard", "table", "l2nnn"} <= set(SUITES)


def test_l2nnn_suite_pairs_each_ce_attack_with_a_margin_loss():
    """Issue 13 Part 1.5: the L2NNN evaluation has margin-loss PGD (CW loss) and APGD-T next to PGD-CE and
    APGD-CE at the same budgets, and CW-L2 under L_2."""
    from lit_robust.attacks import APGD, PGD, CarliniWagnerL2

    suite = SUITES["l2nnn"]("2")
    assert isinstance(suite["pgd-20-margin"], PGD) and suite["pgd-20-margin"].loss == "margin"
    assert suite["pgd-20-margin"].steps == suite["pgd-20"].steps == 20
    assert isinstance(suite["apgd-t"], APGD) and suite["apgd-t"].targeted and suite["apgd-t"].loss == "dlr"
    assert isinstance(suite["cw-l2-1000"], CarliniWagnerL2)
    assert "cw-l2-100" not in SUITES["l2nnn"]("inf")


def help_text(capsys, args: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 0
    return capsys.readouterr().out


def test_fit_help_lists_every_method_and_datamodule(capsys):
    out = help_text(capsys, ["fit", "--help"])
    for name in (*METHODS, *DATAMODULES):
        assert name in out, name
    assert "EntropySGDAT" in out and "AWPAT" in out  # the two that import side effects used to miss


def test_model_help_shows_the_methods_own_arguments(capsys):
    pgd_at = help_text(capsys, ["fit", "--model.help", "PGDAT"])
    assert "--model.train_attack" in pgd_at and "--model.eps" in pgd_at
    trades = help_text(capsys, ["fit", "--model.help", "TRADES"])
    assert "--model.beta" in trades and "--model.train_attack" in trades
    esgd = help_text(capsys, ["fit", "--model.help", "EntropySGDAT"])
    assert "--model.inner_loss" in esgd


def test_model_help_after_choosing_the_model(capsys):
    """``--model PGDAT --model.help``: the help of PGDAT, not of the base class."""
    out = help_text(capsys, ["fit", "--model", "PGDAT", "--model.help"])
    assert "Help for --model.help=lit_robust.methods.PGDAT" in out and "--model.train_attack" in out
    data = help_text(capsys, ["fit", "--data", "FashionMNIST", "--data.help"])
    assert "lit_robust.data.FashionMNIST" in data
