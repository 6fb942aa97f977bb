"""Callbacks: training schedules and monitoring."""

from lit_robust.callbacks.eps_warmup import EpsWarmup

__all__ = ["EpsWarmup"]
