"""``python -m lit_robust {fit,validate,test,evaluate} --config configs/X.yaml``: a LightningCLI for robust
training.

Differences from a plain ``LightningCLI``:

- model and data are chosen by class (subclass mode): ``--model PGDAT --data MNIST`` or ``class_path``
  in the YAML; every method and datamodule of :mod:`lit_robust.registry` is listed by ``--help``;
- ``--model X --model.help`` describes X (jsonargparse alone would describe the base class);
- configs are parsed with omegaconf, so ``${model.init_args.eps}`` interpolation works;
- ``trainer.inference_mode`` defaults to False: Lightning's inference mode would silently disable the
  gradient attacks of validation and test;
- the logger defaults to CSV under ``logs/`` (no account needed; :class:`lit_robust.loggers.CSVLogger`
  continues a resumed run's ``metrics.csv``); W&B is one config line away and, without its own
  ``save_dir``, writes beside the CSV logs;
- ``fit --ckpt_path last`` continues the latest run of the config in its own folder (an error when there
  is none) and ``--ckpt_path auto`` continues it or starts one (:mod:`lit_robust.resume`);
- re-running into the same log directory overwrites its saved ``config.yaml``;
- ``evaluate --ckpt_path C [--suite standard|table|quick]`` runs a suite of attacks on the test split and
  writes JSON + Markdown tables (:meth:`lit_robust.trainer.RobustTrainer.evaluate`); ``--checks N`` adds
  the diagnostics (gaps, Lipschitz estimates, masking checks) of the first N images;
- ``plot RUN_DIR [--out DIR]`` draws PNG plots from a run's CSV logs (:mod:`lit_robust.plot`; no model
  or config needed);
- bad input (a :class:`~lit_robust.errors.LitRobustError`, Lightning's checks of trainer arguments, a
  misspelled option: :mod:`lit_robust.parser`) prints one ``error:`` line and exits 2 (``LIT_ROBUST_DEBUG=1``
  shows the traceback); a fit
  stopped by SIGUSR1/SIGTERM (:class:`~lit_robust.callbacks.Preemption`) prints one ``preempted:`` line
  and exits with 128 + the signal number; ``validate``/``test``/``predict`` stopped by SIGTERM print one
  ``stopped:`` line and exit with 143 (Lightning's own answer exits 0, as if they had finished);
- ``--ckpt_path`` loads weights only: the config and command line define the model (Lightning would
  replace them with the hyperparameters saved in the checkpoint, silently dropping e.g. an
  ``--model.init_args.eps`` given to test or evaluate a checkpoint at another radius).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

import lit_robust.callbacks  # noqa: F401  (the callbacks' short names)
from lit_robust.data import RobustDataModule
from lit_robust.errors import LitRobustError, Preempted
from lit_robust.methods import RobustClassifier
from lit_robust.parser import DEBUG_ENV, RobustParser
from lit_robust.preflight import preflight
from lit_robust.quiet import quiet_third_party
from lit_robust.registry import DATAMODULES, METHODS  # noqa: F401  (imported: listed by --help)
from lit_robust.resume import log_into_run, resolve_resume, run_of
from lit_robust.trainer import RobustTrainer

TRAINER_DEFAULTS: dict[str, Any] = {
    "inference_mode": False,
    "logger": {
        "class_path": "lit_robust.loggers.CSVLogger",
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
        kwargs.setdefault("parser_class", RobustParser)
        if args is None or isinstance(args, list | tuple):
            args = help_for_chosen_class(sys.argv[1:] if args is None else list(args))
        parser_kwargs = kwargs.pop("parser_kwargs", {})
        parser_kwargs.setdefault("parser_mode", "omegaconf")
        super().__init__(
            RobustClassifier, RobustDataModule, args=args, run=run, parser_kwargs=parser_kwargs, **kwargs
        )

    def before_instantiate_classes(self) -> None:
        """Check devices, W&B, log folders and ``--ckpt_path`` before anything is built
        (:mod:`lit_robust.preflight`); ``fit --ckpt_path last|auto`` finds the run to continue
        (:func:`lit_robust.resume.resolve_resume`);
        a ``WandbLogger`` without its own ``save_dir`` writes next to the other loggers (the CSV logger's
        ``logs/`` by default), not into the current directory."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand:
            preflight(config, self.subcommand)
        if self.subcommand == "fit":
            resolve_resume(config)
        elif self.subcommand:
            log_into_run(config)
        loggers = config.trainer.logger
        loggers = loggers if isinstance(loggers, list) else [loggers]
        args = [lg.init_args for lg in loggers if hasattr(lg, "class_path")]
        folders = [a.save_dir for a in args if a.get("save_dir") not in (None, ".")]
        root = folders[0] if folders else (config.trainer.default_root_dir or ".")
        for logger, init_args in zip([lg for lg in loggers if hasattr(lg, "class_path")], args, strict=True):
            if logger.class_path.endswith("WandbLogger") and init_args.get("save_dir") in (None, "."):
                init_args.save_dir = root

    def instantiate_classes(self) -> None:
        """As LightningCLI, then hand the module its net's config (class path and arguments): checkpoints
        and ``export`` record it, so that a net can be rebuilt without the training config."""
        super().instantiate_classes()
        config = self.config[self.subcommand] if self.subcommand else self.config
        net = config.model.get("init_args", {}).get("net") if config.get("model") else None
        if net is not None and hasattr(net, "as_dict") and isinstance(self.model, RobustClassifier):
            self.model.net_config = net.as_dict()

    def _parse_ckpt_path(self) -> None:
        """Leave the parsed config as it is (see the module docstring): the configs are complete, and the
        checkpoint's weights are checked against the configured net when they load."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Lightning's subcommands plus ``evaluate`` and ``export``."""
        return {
            **LightningCLI.subcommands(),
            "evaluate": {"model", "datamodule"},
            "export": {"model", "datamodule"},
        }


def help_for_chosen_class(argv: list[str]) -> list[str]:
    """``--model X --model.help`` -> ``--model X --model.help X`` (same for ``--data``): jsonargparse's
    bare ``--model.help`` describes the base class, not the one chosen on the command line."""
    out = list(argv)
    for key in ("model", "data"):
        chosen = None
        for i, arg in enumerate(out):
            if arg == f"--{key}" and i + 1 < len(out):
                chosen = out[i + 1]
            elif arg.startswith(f"--{key}="):
                chosen = arg.split("=", 1)[1]
            elif arg == f"--{key}.help" and chosen and (i + 1 == len(out) or out[i + 1].startswith("-")):
                out.insert(i + 1, chosen)
                break
    return out


def main(args: list[str] | None = None, run: bool = True) -> RobustCLI | list:
    """Entry point of ``python -m lit_robust`` and of the ``lit_robust`` script; returns the CLI object
    (``cli.trainer``, ``cli.model``, ``cli.datamodule``) so that scripts and tests can inspect the run.
    ``plot`` is handled before LightningCLI (it needs no model) and returns the written PNG paths."""
    if args is None:  # the program itself (python -m lit_robust, torchrun ... -m lit_robust): tear down
        try:
            return _main(None, run)
        finally:
            end_process_group()
    return _main(args, run)


def _main(args: list[str] | None, run: bool) -> RobustCLI | list:
    quiet_third_party()
    argv = sys.argv[1:] if args is None else list(args)
    argv = with_run_config(argv)
    args = argv if args is not None or argv != sys.argv[1:] else None
    try:
        if argv[:1] == ["plot"]:
            from lit_robust.plot import main as plot_main

            return plot_main(argv[1:])
        return RobustCLI(args=args, run=run)
    except SIGTERMException:  # Lightning's answer to SIGTERM in validate, test, predict: a SystemExit(0)
        sub = argv[0] if argv and not argv[0].startswith("-") else "the run"
        print(
            f"stopped: {sub} received SIGTERM before it finished; its results are incomplete (rerun the "
            "command)", file=sys.stderr,
        )  # fmt: skip
        raise SystemExit(128 + signal.SIGTERM) from None
    except Exception as err:
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        if isinstance(err, MisconfigurationException):  # Lightning's own checks of the trainer's arguments
            print(f"error: trainer: {str(err).strip().splitlines()[0]}", file=sys.stderr)
            raise SystemExit(2) from None
        user_error = _user_error(err)
        if user_error is None:
            raise
        if isinstance(user_error, Preempted):  # not an error: the run stopped where it can continue
            print(f"preempted: {user_error}", file=sys.stderr)
            raise SystemExit(128 + int(user_error.signum)) from None
        print(f"error: {user_error}", file=sys.stderr)
        raise SystemExit(2) from None


def end_process_group() -> None:
    """Destroy the distributed process group a DDP run created, before the interpreter exits: left to
    interpreter teardown, gloo's threads can abort a worker after a finished fit ("terminate called
    without an active exception", exit -6, seen in 1 to 4 of 6 two-node torchrun fits on CPU)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def with_run_config(argv: list[str]) -> list[str]:
    """``evaluate``/``export``/``test``/``validate``/``predict`` of one of our runs need no ``--config``:
    ``RUN_DIR`` (a ``version_N`` folder) becomes ``--ckpt_path RUN_DIR/checkpoints/<best or last>.ckpt``,
    and the run's saved ``config.yaml`` (its model, data and seed) is put first: a ``--config`` and
    options given still override it."""
    if argv[:1] not in (["evaluate"], ["export"], ["test"], ["validate"], ["predict"]):
        return argv
    out = list(argv)
    if len(out) > 1 and not out[1].startswith("-") and Path(out[1]).is_dir():
        folder = Path(out.pop(1))
        best = sorted((folder / "checkpoints").glob("best-*.ckpt")) or sorted(
            (folder / "checkpoints").glob("last.ckpt")
        )
        if not best:
            raise SystemExit(f"error: {folder} has no checkpoints/best-*.ckpt or last.ckpt")
        out[1:1] = ["--ckpt_path", str(best[-1])]
    ckpt = next((a.split("=", 1)[1] for a in out if a.startswith("--ckpt_path=")), None)
    if ckpt is None and "--ckpt_path" in out[:-1]:
        ckpt = out[out.index("--ckpt_path") + 1]
    run = run_of(ckpt) if ckpt else None
    saved = run / "config.yaml" if run is not None else None
    if saved is not None and saved.is_file():  # first: a --config and options given override it
        out[1:1] = ["--config", _model_and_data(saved)]
    return out


def _model_and_data(config_yaml: Path) -> str:
    """The model, data and seed of a run's saved fit config, as a YAML string for ``--config`` (its
    trainer and fit-only keys such as ``weights_only`` stay out: another subcommand does not take them)."""
    import yaml

    saved = yaml.safe_load(config_yaml.read_text()) or {}
    return yaml.safe_dump({k: saved[k] for k in ("seed_everything", "model", "data") if k in saved})


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
