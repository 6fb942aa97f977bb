"""``RobustTrainer``: Lightning's Trainer plus the ``evaluate`` and ``export`` subcommands of
``python -m lit_robust``."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from lit_robust.attacks import Attack, AutoAttack
from lit_robust.callbacks.preemption import PreemptionFirst
from lit_robust.checkpoint import load_module
from lit_robust.diagnostics import run_checks
from lit_robust.errors import ConfigError
from lit_robust.evaluation import Report, build_suite, run_attacks
from lit_robust.export import export_net
from lit_robust.methods.base import RobustClassifier
from lit_robust.validate import integer


class RobustTrainer(Trainer):
    """A ``lightning.pytorch.Trainer`` with :meth:`evaluate` and :meth:`export`, whose fits leave SIGUSR1 and
    SIGTERM to the :class:`~lit_robust.callbacks.Preemption` callback once Lightning's own handlers are
    installed (:class:`~lit_robust.callbacks.preemption.PreemptionFirst`)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._signal_connector = PreemptionFirst(self)

    def evaluate(
        self,
        model: RobustClassifier,
        datamodule: LightningDataModule | None = None,
        ckpt_path: str | None = None,
        suite: str = "standard",
        attacks: dict[str, Attack] | None = None,
        skip: list[str] | None = None,
        split: str = "test",
        output_dir: str | None = None,
        radii: list[float] | None = None,
        checks: int = 0,
        weights_only: bool | None = None,
    ) -> Report:
        """Evaluate a checkpoint under a suite of attacks; write a JSON and a Markdown table.

        Args:
            model: the method (its net, eps and norm define the threat model every attack inherits).
            datamodule: data; the ``split`` ("test" or "val") is evaluated (``test_subset`` limits it).
            ckpt_path: the checkpoint to evaluate (required).
            suite: "standard" (PGD-20, PGD-50 x 5 restarts, APGD-CE, APGD-T, BETA-10, CW-L2 for L_2,
                AutoAttack), "table" (PGD-40, APGD-CE, BETA-10, AutoAttack), "quick" (PGD-20, APGD-CE) or
                "l2nnn" (PGD-20 CE and margin, APGD-CE, APGD-T, CW-L2 100 and 1000 it. under L_2).
            attacks: extra attacks by name (a name of the suite replaces that attack).
            skip: names of suite attacks not to run.
            output_dir: where ``eval_{checkpoint name}.{json,md}`` go; default the run's ``evaluation/``
                directory next to ``checkpoints/``.
            radii: L_2 radii of the certified accuracy reported for nets with a Lipschitz certificate
                (L2NNN); default the method's ``radii``, else its ``eps``.
            checks: run the diagnostics of :func:`lit_robust.diagnostics.run_checks` (confidence gaps,
                Lipschitz estimates, gradient-masking checks) on the first ``checks`` images of the split
                and add them to the report (JSON ``checks``, a Markdown section); 0: none.
            weights_only: accepted so that a run's saved fit config can be passed as it is; checkpoints are
                always read with ``torch.load(weights_only=True)``.
        """
        if ckpt_path is None:
            raise ConfigError("evaluate needs --ckpt_path (the checkpoint to evaluate)")
        ckpt = Path(ckpt_path)
        if split not in ("test", "val"):
            raise ConfigError(f"--split must be 'test' or 'val', got {split!r}")
        if datamodule is None:
            raise ConfigError("evaluate needs data (--data or a config with data:)")
        checks = integer("--checks", checks, 0)
        if self.world_size > 1:
            raise ConfigError("evaluate runs in one process: pass --trainer.devices 1")
        attack_suite = {
            name: model.bind_attack(a)
            for name, a in build_suite(suite, model.norm, attacks, skip or ()).items()
        }

        state = load_module(model, ckpt, "--ckpt_path")
        out = (
            Path(output_dir)
            if output_dir
            else (ckpt.parent.parent / "evaluation" if ckpt.parent.name == "checkpoints" else ckpt.parent)
        )
        for attack in attack_suite.values():  # an interrupted AutoAttack resumes from its state
            if isinstance(attack, AutoAttack) and attack.state_dir is None:
                attack.state_dir = str(out / f"autoattack_state_{ckpt.stem}")

        datamodule.setup("test" if split == "test" else "validate")
        loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
        device = self.strategy.root_device
        net = model.net.to(device)
        if radii is None:
            radii = list(getattr(model, "radii", [model.eps]))
        report = run_attacks(
            net, loader, attack_suite, device=device, progress=self.is_global_zero, radii=radii
        )
        if checks:
            x, y = first_images(loader, checks)
            report.checks = run_checks(
                net, x.to(device), y.to(device), model.eval_attack, model.eps, model.norm, radii
            )
        report.meta = {
            "model": type(model).__name__,
            "net": type(model.net).__name__,
            "data": type(datamodule).__name__,
            "ckpt_path": str(ckpt),
            "epoch": state.get("epoch"),
            "eps": model.eps,
            "norm": model.norm,
            "split": split,
            "suite": suite,
        }
        offset = getattr(datamodule, "test_offset", 0) if split == "test" else 0
        if offset:  # a chunk of the test set: its per-sample results start at this test index
            report.meta["first_index"] = offset
        json_path, md_path = report.write(out, f"eval_{ckpt.stem}" + (f"_from{offset}" if offset else ""))
        accuracies = report.accuracies()
        for logger in self.loggers:
            logger.log_metrics({f"eval/{k}_acc": v for k, v in accuracies.items()})
            if type(logger).__name__ == "WandbLogger":  # the table itself, next to the run's curves
                rows = [
                    [name, value, report.implementations.get(name, "")] for name, value in accuracies.items()
                ]
                logger.log_table(
                    key=f"eval/{suite}", columns=["attack", "accuracy", "implementation"], data=rows
                )
            logger.save()
        rank_zero_info(report.to_markdown())
        rank_zero_info(f"wrote {json_path} and {md_path}")
        return report

    def export(
        self,
        model: RobustClassifier,
        datamodule: LightningDataModule | None = None,
        ckpt_path: str | None = None,
        output_dir: str | None = None,
        weights_only: bool | None = None,
    ) -> tuple[Path, Path]:
        """Write the checkpoint's net as ``model.safetensors`` + ``model.json`` (:mod:`lit_robust.export`).

        Args:
            model: the method and net of the checkpoint (the config the run was trained with).
            datamodule: unused (accepted so that a run's config can be passed as it is).
            ckpt_path: the checkpoint (any format ``evaluate`` takes).
            output_dir: the export folder; default ``<run>/export`` next to ``checkpoints/``.
            weights_only: accepted so that a run's saved fit config can be passed as it is.
        """
        if ckpt_path is None:
            raise ConfigError("export needs --ckpt_path (the checkpoint to export)")
        ckpt = Path(ckpt_path)
        state = load_module(model, ckpt, "--ckpt_path")
        out = Path(output_dir) if output_dir else _next_to_run(ckpt, "export")
        best = float(model.best_robust.max_value)  # -inf: the checkpoint has no validation yet
        meta = {
            "threat_model": {"eps": model.eps, "norm": model.norm},
            "method": {"name": type(model).__name__, "hyperparameters": dict(model.hparams)},
            "checkpoint": {
                "path": str(ckpt),
                "epoch": state.get("epoch"),
                "global_step": state.get("global_step"),
            },
            "metrics": {"val/robust_acc_best": best if math.isfinite(best) else None},
        }
        paths = export_net(model.net, model.net_config or state.get("net_config"), out, meta)
        rank_zero_info(f"wrote {paths[0]} and {paths[1]}")
        return paths


def _next_to_run(ckpt: Path, name: str) -> Path:
    """``<run>/<name>`` for a checkpoint in ``<run>/checkpoints/``, else a folder beside the file."""
    return (
        ckpt.parent.parent / name
        if ckpt.parent.name == "checkpoints"
        else ckpt.parent / f"{ckpt.stem}_{name}"
    )


def first_images(loader, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` (image, label) pairs a loader yields, concatenated."""
    xs, ys, seen = [], [], 0
    for x, y in loader:
        xs.append(x[: n - seen])
        ys.append(y[: n - seen])
        seen += xs[-1].shape[0]
        if seen >= n:
            break
    return torch.cat(xs), torch.cat(ys)
