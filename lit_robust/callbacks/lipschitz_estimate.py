"""Bounds on the L2 Lipschitz constant of the logit map f: an upper bound from the layers and lower bounds
from data.

Upper bound (per layer, by power iteration, :func:`lit_robust.lipschitz.layer_operator_norm`): each
Linear/Conv layer l (and each custom leaf layer with a weight matrix, e.g. the L2NNN's) is the linear
operator A_l at the input shape it sees in the forward pass (borders and stride included, not a
reshaped kernel), and

    L(f) <= U = prod_l ||A_l||_2 * prod_k s_k

where s_k = max_c 1/std_c for a Normalize layer and max_c |gamma_c| / sqrt(var_c + eps) for an
eval-mode BatchNorm. U is a bound only for a feed-forward chain whose other layers are 1-Lipschitz
(ReLU, non-overlapping max-pool, flatten); residual or attention nets need other bounds. Power
iteration approaches each ||A_l|| from below, so U is an estimate of the bound, exact for ``iters``
large enough (tested against the dense operator).

Lower bounds, on ``num_samples`` fixed validation images (the first ones of the split):

    L(f) >= J = max_i ||J_f(x_i)||_2                 (local Jacobian norm, :func:`jacobian_norm`)
    L(f) >= P = max_i ||f(x'_i) - f(x_i)||_2 / ||x'_i - x_i||_2   (x' from the evaluation attack)

Logged every ``every_n_epochs`` validation epochs: ``lipschitz/upper_bound``, ``lipschitz/layer/<name>``,
``lipschitz/jacobian_max``, ``lipschitz/jacobian_mean``, ``lipschitz/attack_pair_max``,
``lipschitz/lower_bound`` = max(J, P), and ``lipschitz/certificate`` when the net declares one.
"""

from __future__ import annotations

import math

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn
from torchmetrics import MaxMetric, MeanMetric

from lit_robust.attacks import Attack
from lit_robust.callbacks._common import check_int, is_due, log_values, monitoring, samples_to_take
from lit_robust.certify import net_certificate
from lit_robust.errors import ConfigError
from lit_robust.lipschitz import jacobian_norm, layer_operator_norm
from lit_robust.nets import Normalize

LINEAR_LAYERS = (nn.Linear, nn.modules.conv._ConvNd)
SCALING_LAYERS = (Normalize, nn.modules.batchnorm._BatchNorm)


def is_linear_layer(module: nn.Module) -> bool:
    """Linear/Conv layers, and custom leaf layers with a weight matrix/kernel (e.g. the L2NNN's NEConv2d,
    NELinear, ClassHeads), which are assumed affine in their input."""
    if isinstance(module, LINEAR_LAYERS):
        return True
    weight = getattr(module, "weight", None)
    leaf = next(module.children(), None) is None
    return (
        leaf
        and isinstance(weight, nn.Parameter)
        and weight.dim() >= 2
        and not isinstance(module, nn.Embedding)
    )


def layer_input_shapes(net: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Per-sample input shape of every linear layer of ``net`` (:func:`is_linear_layer`), from one forward
    pass on ``x[:1]``
    (forward pre-hooks; the net runs in eval mode and its mode is restored)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            shapes.setdefault(name, tuple(args[0].shape[1:]))

        return hook

    hooks = [
        module.register_forward_pre_hook(record(name))
        for name, module in net.named_modules()
        if is_linear_layer(module)
    ]
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(x[:1])
    finally:
        net.train(was_training)
        for hook in hooks:
            hook.remove()
    return shapes


def scaling_factor(module: nn.Module) -> float:
    """Operator norm of a per-channel affine layer: Normalize (1/std) or eval-mode BatchNorm."""
    if isinstance(module, Normalize):
        return float((1.0 / module.std).max())
    var = module.running_var
    if var is None:  # batch statistics: no fixed linear map
        return math.nan
    gamma = module.weight if module.weight is not None else torch.ones_like(var)
    return float((gamma.abs() / torch.sqrt(var + module.eps)).max())


def spectral_norms(net: nn.Module, x: torch.Tensor, iters: int = 50, seed: int = 0) -> dict[str, float]:
    """``{layer name: sigma_max}`` for the Linear/Conv layers that ``net`` uses on inputs like ``x``
    (power iteration with a seeded generator, so every DDP rank gets the same numbers), plus the
    closed-form factors of Normalize and BatchNorm layers."""
    norms: dict[str, float] = {}
    shapes = layer_input_shapes(net, x)
    modules = dict(net.named_modules())
    for name, shape in shapes.items():
        layer = modules[name]
        generator = torch.Generator(device=next(layer.parameters()).device).manual_seed(seed)
        norms[name] = layer_operator_norm(layer, shape, iters=iters, generator=generator)
    for name, module in modules.items():
        if isinstance(module, SCALING_LAYERS):
            norms[name] = scaling_factor(module)
    return norms


def upper_bound(norms: dict[str, float]) -> float:
    """prod of the per-layer norms."""
    return math.prod(norms.values())


class LipschitzEstimate(Callback):
    """Per-layer spectral norms, their product (upper bound) and data lower bounds, on validation.

    Args:
        every_n_epochs: run on every n-th validation epoch (the first included) and in ``validate``.
        num_samples: validation images (the first ones, across all ranks) for the lower bounds; 0 skips
            them.
        iters: power-iteration steps for the layers; ``jacobian_iters`` for the local Jacobians.
        attack: attack giving the pairs (x, x'); default the module's evaluation attack. ``null`` in
            YAML keeps the default; set ``attack_pairs: false`` to skip the pairs.
        attack_pairs: compute the attack-pair lower bound.
        seed: seed of the power iterations.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_samples: int = 100,
        iters: int = 50,
        jacobian_iters: int = 20,
        attack: Attack | None = None,
        attack_pairs: bool = True,
        seed: int = 0,
    ) -> None:
        self.every_n_epochs = check_int("LipschitzEstimate", "every_n_epochs", every_n_epochs)
        self.num_samples = check_int("LipschitzEstimate", "num_samples", num_samples, 0)
        self.iters = check_int("LipschitzEstimate", "iters", iters)
        self.jacobian_iters = check_int("LipschitzEstimate", "jacobian_iters", jacobian_iters)
        if attack is not None and not isinstance(attack, Attack):
            raise ConfigError(
                f"LipschitzEstimate.attack must be a lit_robust Attack, got {type(attack).__name__}"
            )
        self.attack = attack
        self.attack_pairs = bool(attack_pairs)
        self.seed = check_int("LipschitzEstimate", "seed", seed, 0)
        self.last: dict[str, float] = {}
        self._active = False
        self._seen = 0
        self._sample: torch.Tensor | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.attack is not None:
            pl_module.bind_attack(self.attack)
        self._jac_max, self._jac_mean, self._pair_max = MaxMetric(), MeanMetric(), MaxMetric()

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._active = is_due(trainer, self.every_n_epochs)
        self._seen, self._sample = 0, None
        for metric in (self._jac_max, self._jac_mean, self._pair_max):
            metric.reset()
            metric.to(pl_module.device)

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs,
        batch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._active:
            return
        x, y = batch
        if self._sample is None:
            self._sample = x[:1].detach()
        per_rank = math.ceil(self.num_samples / trainer.world_size)
        n = samples_to_take(batch, self._seen, per_rank)
        if n == 0:
            return
        self._seen += n
        x, y = x[:n], y[:n]
        net = pl_module.net
        ratio = None
        with monitoring(pl_module.device):
            x, y = x.clone(), y.clone()  # not inference tensors
            was_training = net.training
            net.eval()
            try:
                generator = torch.Generator(device=x.device).manual_seed(self.seed)
                jac = jacobian_norm(net, x, iters=self.jacobian_iters, generator=generator)
                if self.attack_pairs:
                    attack = self.attack if self.attack is not None else pl_module.eval_attack
                    x_adv = attack(net, x, y)
                    with torch.no_grad():
                        dist = (x_adv - x).flatten(1).norm(dim=1)
                        moved = (net(x_adv) - net(x)).flatten(1).norm(dim=1)
                    ratio = moved[dist > 0] / dist[dist > 0]
            finally:
                net.train(was_training)
        # metric states live in the loop's (possibly inference) mode: update them outside `monitoring`
        self._jac_max.update(jac)
        self._jac_mean.update(jac)
        if ratio is not None and ratio.numel():
            self._pair_max.update(ratio)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._active:
            return
        self._active = False
        values: dict[str, float] = {}
        if self._sample is not None:
            with monitoring(pl_module.device):
                norms = spectral_norms(pl_module.net, self._sample.clone(), self.iters, self.seed)
            if norms:  # a net without recognisable layers gets no (empty-product) bound
                values["lipschitz/upper_bound"] = upper_bound(norms)
            values.update({f"lipschitz/layer/{name}": v for name, v in norms.items()})
        certificate = net_certificate(pl_module.net)
        if certificate is not None:
            values["lipschitz/certificate"] = float(certificate[0])
        if self.num_samples > 0:
            # compute() all-gathers under DDP; every rank calls it (a rank with no sample gives -inf/nan)
            values["lipschitz/jacobian_max"] = float(self._jac_max.compute())
            values["lipschitz/jacobian_mean"] = float(self._jac_mean.compute())
            lower = values["lipschitz/jacobian_max"]
            if self.attack_pairs:
                values["lipschitz/attack_pair_max"] = float(self._pair_max.compute())
                lower = max(lower, values["lipschitz/attack_pair_max"])
            values["lipschitz/lower_bound"] = lower
        self.last = values
        log_values(pl_module, values)
