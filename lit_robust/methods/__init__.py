"""Robust-training methods: LightningModules that override only ``training_loss``."""

from lit_robust.methods.arovr import AROVR
from lit_robust.methods.base import RobustClassifier
from lit_robust.methods.beta_at import BETAAT, SBETAAT
from lit_robust.methods.entropysgd_at import AWPAT, EntropySGDAT
from lit_robust.methods.erm import ERM
from lit_robust.methods.l2nnn import L2NNN
from lit_robust.methods.mart import MART
from lit_robust.methods.pgd_at import PGDAT
from lit_robust.methods.trades import TRADES

__all__ = [
    "RobustClassifier",
    "ERM",
    "PGDAT",
    "TRADES",
    "MART",
    "BETAAT",
    "SBETAAT",
    "EntropySGDAT",
    "AWPAT",
    "L2NNN",
    "AROVR",
]
