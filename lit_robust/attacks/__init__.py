"""Attacks shared by training, validation and evaluation: one :class:`Attack` base, threat-model balls."""

from lit_robust.attacks.base import Attack, attack_mode
from lit_robust.attacks.fgsm import FGSM
from lit_robust.attacks.pgd import PGD
from lit_robust.attacks.threat import Ball, L2Ball, LinfBall, make_ball

__all__ = ["Attack", "FGSM", "PGD", "Ball", "L2Ball", "LinfBall", "attack_mode", "make_ball"]
