"""The one way a file of weights becomes a ready net or module.

- :func:`read_checkpoint`: the file as a dict (a Lightning checkpoint, or a plain state dict), with an error
  naming the field that gave the path when it is missing or unreadable;
- :func:`net_weights`: the net's weights in it (``net.*`` keys of a module checkpoint, or the plain dict);
- :func:`check_fits`: one error listing missing / unexpected keys and shape mismatches against a net;
- :func:`load_net`: all three, then ``net.load_state_dict`` (``model.init_from``: fine-tuning);
- :func:`load_module`: a :class:`~lit_robust.methods.RobustClassifier` from a Lightning checkpoint
  (``evaluate``, scripts); ``fit/validate/test --ckpt_path`` go through Lightning, which calls the same
  :func:`check_fits` from ``RobustClassifier.on_load_checkpoint``;
- :func:`rng_states` / :func:`set_rng_states`: the global random streams a checkpoint carries, so that a
  resumed fit draws the same attack starts as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import pickle
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lit_robust.errors import ConfigError

#: set to 1 to load checkpoints that hold arbitrary pickled objects (only files you trust)
TRUST_ENV = "LIT_ROBUST_TRUST_CHECKPOINTS"


def read_checkpoint(path: str | Path, field: str = "--ckpt_path") -> dict:
    """``torch.load(weights_only=True)`` of ``path`` on the CPU (tensors and plain values only: a file whose
    unpickling would run code is refused); ConfigError naming ``field`` if it is not a readable dict."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{field} {str(path)!r} is not a file")
    trusted = os.environ.get(TRUST_ENV) == "1"
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as err:
        lines = [line.strip() for line in str(err).splitlines() if "unsupported global" in line.lower()]
        if not lines:  # not a pickle of objects at all: a damaged or foreign file
            detail = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            raise ConfigError(f"{field}: cannot read {str(path)!r} as a torch checkpoint: {detail}") from None
        first = lines[0]
        raise ConfigError(
            f"{field}: {str(path)!r} holds more than tensors and plain values, which a safe load refuses "
            f"(unpickling it could run code): {first}. If you wrote it yourself (e.g. with an older "
            f"lit_robust) and trust it, set {TRUST_ENV}=1"
        ) from None
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{field}: cannot read {str(path)!r} as a torch checkpoint: {first}") from None
    if not isinstance(ckpt, dict):
        raise ConfigError(f"{field}: {str(path)!r} holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def net_weights(ckpt: dict) -> dict:
    """The net's state dict: the ``net.``-prefixed entries of a module's ``state_dict`` (prefix removed), or
    ``ckpt`` itself when it is a plain state dict of tensors."""
    state = ckpt.get("state_dict", ckpt)
    weights = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    if not weights and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        weights = dict(state)
    return weights


def check_fits(net: nn.Module, weights: dict, field: str) -> None:
    """ConfigError naming ``field`` unless ``weights`` has exactly the keys of ``net.state_dict()`` with the
    same shapes (non-tensor extra state, e.g. an L2NNN weight scheme, is compared by key only)."""

    def shapes(state: dict) -> dict[str, tuple | None]:
        return {k: tuple(v.shape) if isinstance(v, torch.Tensor) else None for k, v in state.items()}

    own, saved = shapes(net.state_dict()), shapes(weights)
    problems = [f"missing net.{k}" for k in sorted(own.keys() - saved.keys())]
    problems += [f"unexpected net.{k}" for k in sorted(saved.keys() - own.keys())]
    problems += [
        f"net.{k}: {saved[k]} vs {own[k]}" for k in sorted(own.keys() & saved.keys()) if saved[k] != own[k]
    ]
    if problems:
        raise ConfigError(
            f"{field}: the checkpoint does not fit model.net ({type(net).__name__}): "
            + "; ".join(problems[:5])
            + (f"; ... ({len(problems)} in all)" if len(problems) > 5 else "")
        )


def load_net(net: nn.Module, path: str | Path, field: str = "model.init_from") -> None:
    """Load the net weights of ``path`` (any format of :func:`read_any`) into ``net``."""
    ckpt = read_any(path, field)
    weights = ckpt["net_weights"] if "net_weights" in ckpt else net_weights(ckpt)
    check_fits(net, weights, field)
    net.load_state_dict(weights)


def _safetensors(path: Path, field: str) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ConfigError(f"{field}: cannot read {str(path)!r} as safetensors: {err}") from None


#: normalisation buffers of RobustBench models (`mu`, `sigma`, shape (1, C, 1, 1)) -> our Normalize layer
_NORMALISATION_KEYS = {"mu": "normalize.mean", "sigma": "normalize.std"}


def read_any(path: str | Path, field: str = "--ckpt_path") -> dict:
    """A checkpoint in any format we take, as a dict: a Lightning checkpoint of ours as it is; otherwise
    ``{"format": ..., "net_weights": {...}, "meta": {...}}`` for an export folder of ours
    (``model.safetensors`` + ``model.json``), a ``.safetensors`` file, or a plain PyTorch state dict (also
    ``{"state_dict": {...}}`` without our ``net.`` prefix, and DataParallel's ``module.`` prefix, as in
    RobustBench's files, whose ``mu``/``sigma`` normalisation buffers become the net's ``normalize.*``)."""
    from lit_robust.export import METADATA, WEIGHTS

    file = Path(path).expanduser()
    if file.is_dir():
        if not (file / WEIGHTS).is_file():
            raise ConfigError(f"{field} {str(path)!r} is a folder without {WEIGHTS} (not an export of ours)")
        meta = json.loads((file / METADATA).read_text()) if (file / METADATA).is_file() else {}
        return {"format": "export", "net_weights": _safetensors(file / WEIGHTS, field), "meta": meta}
    if file.suffix == ".safetensors":
        if not file.is_file():
            raise ConfigError(f"{field} {str(path)!r} is not a file")
        return {"format": "safetensors", "net_weights": _safetensors(file, field), "meta": {}}
    ckpt = read_checkpoint(file, field)
    state = ckpt.get("state_dict")
    if isinstance(state, dict) and any(k.startswith("net.") for k in state):
        return ckpt
    plain = state if isinstance(state, dict) else ckpt
    if not plain or not all(isinstance(v, torch.Tensor) for v in plain.values()):
        raise ConfigError(
            f"{field} {str(path)!r} is neither a checkpoint of ours nor a state dict of tensors "
            f"(keys: {sorted(map(str, ckpt))[:5]})"
        )
    weights = {k.removeprefix("module."): v for k, v in plain.items()}
    for theirs, ours in _NORMALISATION_KEYS.items():  # RobustBench nets that normalise in forward
        if theirs in weights and ours not in weights:
            weights[ours] = weights.pop(theirs)
    return {"format": "state_dict", "net_weights": weights, "meta": {}}


def load_module(module: nn.Module, path: str | Path, field: str = "--ckpt_path") -> dict:
    """Load a checkpoint in any format of :func:`read_any` into ``module`` (a Lightning checkpoint: its net
    and any loss parameters, e.g. L2NNN's u/v; otherwise the net) and return the checkpoint dict. The
    module's own config stays: only weights load."""
    ckpt = read_any(path, field)
    if "net_weights" in ckpt:
        check_fits(module.net, ckpt["net_weights"], field)
        module.net.load_state_dict(ckpt["net_weights"])
        return ckpt
    module.on_load_checkpoint(ckpt)  # the net check of fit/test
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:  # a loss parameter outside the net (e.g. L2NNN's u) of another shape
        first = str(err).strip().splitlines()[0]
        raise ConfigError(f"{field}: checkpoint {str(path)!r} does not fit model: {first}") from None
    return ckpt


def rng_states() -> dict:
    """Every global random stream (python, numpy, torch CPU, CUDA when present) as plain tensors and ints,
    so that it survives ``torch.load(weights_only=True)``."""
    version, state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "python": [version, list(state), gauss],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    """Restore what :func:`rng_states` returned."""
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))
    n = states["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
