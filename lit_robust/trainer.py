"""``RobustTrainer``: Lightning's Trainer plus the ``evaluate`` subcommand of ``python -m lit_robust``."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from lit_robust.attacks import Attack
from lit_robust.errors import ConfigError
from lit_robust.evaluation import Report, build_suite, run_attacks
from lit_robust.methods.base import RobustClassifier


class RobustTrainer(Trainer):
    """A ``lightning.pytorch.Trainer`` with :meth:`evaluate`."""

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
    ) -> Report:
        """Evaluate a checkpoint under a suite of attacks; write a JSON and a Markdown table.

        Args:
            model: the method (its net, eps and norm define the threat model every attack inherits).
            datamodule: data; the ``split`` ("test" or "val") is evaluated (``test_subset`` limits it).
            ckpt_path: the checkpoint to evaluate (required).
            suite: "standard" (PGD-20, PGD-50 x 5 restarts, APGD-CE, APGD-T, BETA-10, CW-L2 for L_2,
                AutoAttack), "table" (PGD-40, APGD-CE, BETA-10, AutoAttack) or "quick" (PGD-20, APGD-CE).
            attacks: extra attacks by name (a name of the suite replaces that attack).
            skip: names of suite attacks not to run.
            output_dir: where ``eval_{checkpoint name}.{json,md}`` go; default the run's ``evaluation/``
                directory next to ``checkpoints/``.
            radii: L_2 radii of the certified accuracy reported for nets with a Lipschitz certificate
                (L2NNN); default the method's ``radii``, else its ``eps``.
        """
        if ckpt_path is None:
            raise ConfigError("evaluate needs --ckpt_path (the checkpoint to evaluate)")
        ckpt = Path(ckpt_path)
        if not ckpt.is_file():
            raise ConfigError(f"--ckpt_path {ckpt_path!r} is not a file")
        if split not in ("test", "val"):
            raise ConfigError(f"--split must be 'test' or 'val', got {split!r}")
        if datamodule is None:
            raise ConfigError("evaluate needs data (--data or a config with data:)")
        if self.world_size > 1:
            raise ConfigError("evaluate runs in one process: pass --trainer.devices 1")
        attack_suite = {
            name: model.bind_attack(a)
            for name, a in build_suite(suite, model.norm, attacks, skip or ()).items()
        }

        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        if "state_dict" not in state:
            raise ConfigError(f"--ckpt_path {ckpt_path!r} is not a Lightning checkpoint (no state_dict)")
        model.on_load_checkpoint(state)  # the check of fit/test: the net's weights fit model.net
        weights = {k: v for k, v in state["state_dict"].items() if not k.startswith("metrics.")}
        try:
            model.load_state_dict(weights, strict=False)
        except RuntimeError as err:  # a loss parameter outside the net (e.g. L2NNN's u) of another shape
            first = str(err).strip().splitlines()[0]
            raise ConfigError(f"checkpoint {ckpt_path!r} does not fit model: {first}") from None

        datamodule.setup("test" if split == "test" else "validate")
        loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
        device = self.strategy.root_device
        net = model.net.to(device)
        if radii is None:
            radii = list(getattr(model, "radii", [model.eps]))
        report = run_attacks(net, loader, attack_suite, device=device, progress=rank_zero_info, radii=radii)
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
        out = (
            Path(output_dir)
            if output_dir
            else (ckpt.parent.parent / "evaluation" if ckpt.parent.name == "checkpoints" else ckpt.parent)
        )
        json_path, md_path = report.write(out, f"eval_{ckpt.stem}")
        accuracies = report.accuracies()
        for logger in self.loggers:
            logger.log_metrics({f"eval/{k}_acc": v for k, v in accuracies.items()})
            logger.save()
        rank_zero_info(report.to_markdown())
        rank_zero_info(f"wrote {json_path} and {md_path}")
        return report
