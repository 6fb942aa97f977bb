"""``python -m lit_robust export``: a trained net as ``model.safetensors`` + ``model.json``, loadable with
plain PyTorch (the README's snippet) and by ``evaluate --ckpt_path <folder>``.

``model.json`` holds what a user needs to trust and rebuild the net without the training code: the net's
class path and constructor arguments, the input convention (images in [0, 1]; a normalisation, if any, is
inside the net and named here), the threat model, the training method and its hyperparameters, the
checkpoint's metrics, the lit_robust version and the git commit of the code that wrote it.
"""

from __future__ import annotations

import json
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lit_robust.errors import ConfigError

__all__ = ["export_net", "WEIGHTS", "METADATA"]

WEIGHTS, METADATA = "model.safetensors", "model.json"


def _plain(value: Any) -> Any:
    """JSON-safe copy (tensors become lists, paths strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def git_commit() -> str | None:
    """The commit of the lit_robust source tree (None outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _normalisation(net: nn.Module) -> dict[str, Any]:
    norm = getattr(net, "normalize", None)
    mean, std = getattr(norm, "mean", None), getattr(norm, "std", None)
    info: dict[str, Any] = {"inputs": "images in [0, 1], channels first; the net normalises them itself"}
    if mean is not None and std is not None:
        info.update(mean=mean.flatten().tolist(), std=std.flatten().tolist())
    return info


def export_net(
    net: nn.Module, net_config: dict | None, folder: str | Path, meta: dict[str, Any]
) -> tuple[Path, Path]:
    """Write ``net``'s weights (safetensors) and the metadata (``meta`` plus the net's config, input
    convention, versions) to ``folder``; returns both paths. ``net_config``: class_path and init_args."""
    from safetensors.torch import save_file

    if not net_config or "class_path" not in net_config:
        raise ConfigError("export needs the net's config (class_path, init_args): pass the run's --config")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = {
        k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items() if torch.is_tensor(v)
    }
    save_file(weights, str(folder / WEIGHTS))
    try:
        ours = version("lit_robust")
    except PackageNotFoundError:
        ours = None
    record = {
        "format": "lit_robust export 1",
        "net": {
            "class_path": net_config["class_path"],
            "init_args": _plain(net_config.get("init_args") or {}),
        },
        "input": _normalisation(net),
        **_plain(meta),
        "lit_robust_version": ours,
        "git_commit": git_commit(),
    }
    (folder / METADATA).write_text(json.dumps(record, indent=2) + "\n")
    return folder / WEIGHTS, folder / METADATA
