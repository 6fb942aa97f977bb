"""What lit_robust ships, by name: the one list the CLI, ``evaluate`` and the tests read.

- :data:`METHODS`: every :class:`~lit_robust.methods.RobustClassifier` subclass (``--model NAME``);
- :data:`DATAMODULES`: every :class:`~lit_robust.data.RobustDataModule` (``--data NAME``);
- :data:`ATTACKS`: every :class:`~lit_robust.attacks.Attack` (``class_path`` of an attack in a config);
- :data:`SUITES`: the named attack suites of ``evaluate --suite``.

A new method is one file plus one line here; ``tests/unit/test_registry.py`` fails when a subclass is
shipped without it (and so missing from ``fit --help``).
"""

from __future__ import annotations

from lit_robust import attacks, data, methods
from lit_robust.evaluation import SUITES

METHODS: dict[str, type[methods.RobustClassifier]] = {
    cls.__name__: cls
    for cls in (
        methods.ERM,
        methods.PGDAT,
        methods.TRADES,
        methods.MART,
        methods.BETAAT,
        methods.SBETAAT,
        methods.EntropySGDAT,
        methods.AWPAT,
        methods.L2NNN,
        methods.AROVR,
    )
}

DATAMODULES: dict[str, type[data.RobustDataModule]] = {
    cls.__name__: cls for cls in (data.MNIST, data.FashionMNIST, data.CIFAR10, data.CIFAR100, data.SVHN)
}

ATTACKS: dict[str, type[attacks.Attack]] = {
    cls.__name__: cls
    for cls in (
        attacks.FGSM,
        attacks.PGD,
        attacks.TRADESKL,
        attacks.BETA,
        attacks.CarliniWagnerL2,
        attacks.APGD,
        attacks.AutoAttack,
    )
}

__all__ = ["METHODS", "DATAMODULES", "ATTACKS", "SUITES"]
