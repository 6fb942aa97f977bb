"""Attacks shared by training, validation and evaluation: one :class:`Attack` base, threat-model balls."""

from lit_robust.attacks.apgd import APGD
from lit_robust.attacks.autoattack import AutoAttack
from lit_robust.attacks.base import Attack, attack_mode
from lit_robust.attacks.beta import BETA, BETAResult
from lit_robust.attacks.cw import CarliniWagnerL2
from lit_robust.attacks.fgsm import FGSM
from lit_robust.attacks.pgd import PGD
from lit_robust.attacks.threat import Ball, L2Ball, LinfBall, make_ball
from lit_robust.attacks.trades_kl import TRADESKL

__all__ = [
    "Attack",
    "APGD",
    "AutoAttack",
    "BETA",
    "BETAResult",
    "CarliniWagnerL2",
    "FGSM",
    "PGD",
    "TRADESKL",
    "Ball",
    "L2Ball",
    "LinfBall",
    "attack_mode",
    "make_ball",
]
