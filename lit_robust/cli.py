"""``python -m lit_robust {fit,validate,test,evaluate} --config configs/X.yaml``: a LightningCLI for robust
training.

Differences from a plain ``LightningCLI``:

- model and data are chosen by class (subclass mode): ``--model PGDAT --data MNIST`` or ``class_path``
  in the YAML; every method in :mod:`lit_robust.methods` and datamodule in :mod:`lit_robust.data` is
  listed by ``--help``;
- configs are parsed with omegaconf, so ``${model.init_args.eps}`` interpolation works;
- ``trainer.inference_mode`` defaults to False: Lightning's inference mode would silently disable the
  gradient attacks of validation and test;
- the logger defaults to CSV under ``logs/`` (no account needed); W&B is one config line away;
- re-running into the same log directory overwrites its saved ``config.yaml``;
- ``evaluate --ckpt_path C [--suite standard|table|quick]`` runs a suite of attacks on the test split and
  writes JSON + Markdown tables (:meth:`lit_robust.trainer.RobustTrainer.evaluate`);
- ``plot RUN_DIR [--out DIR]`` draws PNG plots from a run's CSV logs (:mod:`lit_robust.plot`; no model
  or config needed);
- bad input (a :class:`~lit_robust.errors.LitRobustError`) prints one ``error:`` line and exits 2;
- ``--ckpt_path`` loads weights only: the config and command line define the model (Lightning would
  replace them with the hyperparameters saved in the checkpoint, silently dropping e.g. an
  ``--model.init_args.eps`` given to test or evaluate a checkpoint at another radius).
"""

from __future__ import annotations

import sys
from typing import Any

from lightning.pytorch.cli import LightningCLI

import lit_robust.callbacks  # noqa: F401  (registers the callbacks for short names)
import lit_robust.data  # noqa: F401  (registers the datamodules as subclasses for --help)
import lit_robust.methods  # noqa: F401  (registers the methods)
from lit_robust.data import RobustDataModule
from lit_robust.errors import LitRobustError
from lit_robust.methods import RobustClassifier
from lit_robust.trainer import RobustTrainer

TRAINER_DEFAULTS: dict[str, Any] = {
    "inference_mode": False,
    "logger": {
        "class_path": "lightning.pytorch.loggers.CSVLogger",
        "init_args": {"save_dir": "logs", "name": "lit_robust"},
    },
}


class RobustCLI(LightningCLI):
    """LightningCLI with lit_robust's defaults (see the module docstring)."""

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("trainer_defaults", TRAINER_DEFAULTS)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("trainer_class", RobustTrainer)
        parser_kwargs = kwargs.pop("parser_kwargs", {})
        parser_kwargs.setdefault("parser_mode", "omegaconf")
        super().__init__(
            RobustClassifier, RobustDataModule, args=args, run=run, parser_kwargs=parser_kwargs, **kwargs
        )

    def _parse_ckpt_path(self) -> None:
        """Leave the parsed config as it is (see the module docstring): the configs are complete, and the
        checkpoint's weights are checked against the configured net when they load."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Lightning's subcommands plus ``evaluate``."""
        return {**LightningCLI.subcommands(), "evaluate": {"model", "datamodule"}}


def main(args: list[str] | None = None, run: bool = True) -> RobustCLI | list:
    """Entry point of ``python -m lit_robust`` and of the ``lit_robust`` script; returns the CLI object
    (``cli.trainer``, ``cli.model``, ``cli.datamodule``) so that scripts and tests can inspect the run.
    ``plot`` is handled before LightningCLI (it needs no model) and returns the written PNG paths."""
    argv = sys.argv[1:] if args is None else args
    try:
        if argv[:1] == ["plot"]:
            from lit_robust.plot import main as plot_main

            return plot_main(argv[1:])
        return RobustCLI(args=args, run=run)
    except Exception as err:
        user_error = _user_error(err)
        if user_error is None:
            raise
        print(f"error: {user_error}", file=sys.stderr)
        raise SystemExit(2) from None


def _user_error(err: BaseException) -> LitRobustError | None:
    """The :class:`LitRobustError` behind ``err``, if any (jsonargparse wraps errors raised while it
    instantiates classes in its own ``ValueError``)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, LitRobustError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
