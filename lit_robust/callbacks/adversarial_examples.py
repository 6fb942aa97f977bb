"""A picture of what the evaluation attack does: clean images, perturbations and adversarial images, each
with the net's prediction.

Grid (one column per image)::

    row 1: x           title "y=<label> p=<prediction on x>"  (red when wrong)
    row 2: delta       shown as 0.5 + delta / (2 max|delta|)  (grey = 0; L_inf: max|delta| = eps)
    row 3: x + delta   title "p=<prediction on x + delta>"  (red when wrong)

Saved every ``every_n_epochs`` validation epochs as ``adversarial_examples/epoch_XXX.png`` (``validate_...``
outside fit) in the run folder and, with a WandbLogger, logged as ``val/adversarial_examples``. Only
global rank 0 draws, on the first images of its first validation batch; it makes no collective call.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lit_robust.attacks import Attack
from lit_robust.callbacks._common import evaluated, is_due, run_dir, wandb_run
from lit_robust.errors import ConfigError
from lit_robust.validate import integer


class AdversarialExamples(Callback):
    """Grid of clean / perturbation / adversarial validation images with predictions (PNG, W&B).

    Args:
        num_images: columns of the grid.
        every_n_epochs: draw on every n-th validation epoch of fit (always in ``validate``).
        attack: attack to show; default: the module's evaluation attack, whose adversarial examples the
            validation step already computed (reused, not re-run).
        output_dir: folder that gets ``adversarial_examples/`` (default: the run's log folder).
    """

    def __init__(
        self,
        num_images: int = 8,
        every_n_epochs: int = 1,
        attack: Attack | None = None,
        output_dir: str | None = None,
    ) -> None:
        self.num_images = integer("AdversarialExamples.num_images", num_images)
        self.every_n_epochs = integer("AdversarialExamples.every_n_epochs", every_n_epochs)
        if attack is not None and not isinstance(attack, Attack):
            raise ConfigError(
                f"AdversarialExamples.attack must be a lit_robust Attack, got {type(attack).__name__}"
            )
        self.attack = attack
        self.output_dir = output_dir
        self.last: dict[str, torch.Tensor | Path] = {}
        self._batch = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.attack is not None:
            pl_module.bind_attack(self.attack)
        self._dir = run_dir(trainer, self.output_dir) / "adversarial_examples"

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if batch_idx == 0 and trainer.is_global_zero and is_due(trainer, self.every_n_epochs):
            out = evaluated(pl_module, outputs, batch, self.num_images, self.attack)
            self._batch = {k: v.detach().cpu() for k, v in out.items()}

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._batch is None:
            return
        x, y, x_adv = self._batch["x"], self._batch["y"], self._batch["x_adv"]
        pred, pred_adv = self._batch["logits"].argmax(1), self._batch["adv_logits"].argmax(1)
        self._batch = None
        fn = trainer.state.fn
        stage = "epoch" if fn == "fit" else str(getattr(fn, "value", fn))
        path = self._dir / f"{stage}_{trainer.current_epoch:03d}.png"
        names = getattr(getattr(trainer, "datamodule", None), "classes", None)
        draw_grid(x, x_adv, y, pred, pred_adv, path, names)
        self.last = {"x": x, "x_adv": x_adv, "y": y, "pred": pred, "pred_adv": pred_adv, "path": path}
        run = wandb_run(trainer)
        if run is not None:
            import wandb

            caption = f"epoch {trainer.current_epoch}: clean / perturbation / adversarial"
            run.log(
                {
                    "val/adversarial_examples": wandb.Image(str(path), caption=caption),
                    "trainer/global_step": trainer.global_step,
                }
            )


def _image(t: torch.Tensor):
    """(C, H, W) in [0, 1] -> what ``imshow`` takes (H, W) grey or (H, W, C)."""
    return t[0].numpy() if t.shape[0] == 1 else t.permute(1, 2, 0).numpy()


def draw_grid(x, x_adv, y, pred, pred_adv, path: Path, names=None) -> Path:
    """Write the 3-row grid described in the module docstring to ``path`` (PNG) and return it."""
    from matplotlib.figure import Figure

    def label(i: torch.Tensor) -> str:
        return str(names[int(i)]) if names else str(int(i))

    delta = x_adv - x
    scale = delta.abs().amax().clamp_min(1e-12)
    shown = (0.5 + delta / (2 * scale)).clamp(0, 1)
    n = x.shape[0]
    fig = Figure(figsize=(1.4 * n, 4.6))
    axes = fig.subplots(3, n, squeeze=False)
    for i in range(n):
        for row, img in enumerate((x[i], shown[i], x_adv[i])):
            ax = axes[row][i]
            ax.imshow(_image(img), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        color = "red" if pred[i] != y[i] else "black"
        axes[0][i].set_title(f"y={label(y[i])} p={label(pred[i])}", fontsize=8, color=color)
        wrong = pred_adv[i] != y[i]
        axes[2][i].set_title(f"p={label(pred_adv[i])}", fontsize=8, color="red" if wrong else "black")
    axes[0][0].set_ylabel("clean", fontsize=8)
    axes[1][0].set_ylabel(f"delta (max {float(scale):.3g})", fontsize=8)
    axes[2][0].set_ylabel("adversarial", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
