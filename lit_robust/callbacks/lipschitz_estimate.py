"""Estimates of the L2 Lipschitz constant of the logit map f: the product of layer norms and lower bounds
from data.

Layer product (per layer, by power iteration,
:func:`lit_robust.diagnostics.lipschitz.layer_operator_norm`): each Linear/Conv layer l (and each
custom leaf layer with a weight matrix, e.g. the L2NNN's) is the linear operator A_l at the input shape
it sees in the forward pass (borders and stride included, not a reshaped kernel), and

    U = prod_l ||A_l||_2 * prod_k s_k            (logged as lipschitz/layer_product_estimate)

where s_k = max_c 1/std_c for a Normalize layer and max_c |gamma_c| / sqrt(var_c + eps) for an
eval-mode BatchNorm. U would bound L(f) for a feed-forward chain whose other layers are 1-Lipschitz
(ReLU, non-overlapping max-pool, flatten) if the norms were exact; but power iteration approaches each
||A_l|| from below (exact only for ``iters`` large enough, tested against the dense operator), and for
residual or attention nets the product is no bound at all (x + W x has Lipschitz constant up to
1 + ||W||, not ||W||). So U is an *estimate*, never a certificate: only a net's own proven
``lipschitz_certificate()`` (``lipschitz/certificate``) is one.

Lower bounds, on ``num_samples`` fixed validation images (the first ones of the split):

    L(f) >= J = max_i ||J_f(x_i)||_2                 (local Jacobian norm, :func:`jacobian_norm`)
    L(f) >= P = max_i ||f(x'_i) - f(x_i)||_2 / ||x'_i - x_i||_2   (x' from the evaluation attack)

Logged every ``every_n_epochs`` validation epochs: ``lipschitz/layer_product_estimate``,
``lipschitz/layer/<name>``,
``lipschitz/jacobian_max``, ``lipschitz/jacobian_mean``, ``lipschitz/attack_pair_max``,
``lipschitz/lower_bound`` = max(J, P), and ``lipschitz/certificate`` when the net declares one.
"""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule, Trainer
from torchmetrics import MaxMetric, MeanMetric

from lit_robust.attacks import Attack
from lit_robust.callbacks._common import SampledMonitor, evaluated, log_values, monitoring
from lit_robust.diagnostics.gaps import net_certificate
from lit_robust.diagnostics.lipschitz import jacobian_norm, layer_product, pair_ratios, spectral_norms
from lit_robust.validate import integer


class LipschitzEstimate(SampledMonitor):
    """Per-layer spectral norms, their product (an estimate) and data lower bounds, on validation.

    Args:
        every_n_epochs: run on every n-th validation epoch (the first included) and in ``validate``.
        num_samples: validation images (the first ones, across all ranks) for the lower bounds; 0 skips
            them.
        iters: power-iteration steps for the layers; ``jacobian_iters`` for the local Jacobians.
        attack: attack giving the pairs (x, x'); default the module's evaluation attack, whose pairs the
            validation step already computed (reused). ``attack_pairs: false`` skips the pairs.
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
        super().__init__(every_n_epochs, num_samples, attack, min_samples=0, optional_samples=False)
        self.iters = integer("LipschitzEstimate.iters", iters)
        self.jacobian_iters = integer("LipschitzEstimate.jacobian_iters", jacobian_iters)
        self.attack_pairs = bool(attack_pairs)
        self.seed = integer("LipschitzEstimate.seed", seed, 0)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._jac_max, self._jac_mean, self._pair_max = MaxMetric(), MeanMetric(), MaxMetric()

    def start(self, pl_module: LightningModule) -> None:
        for metric in (self._jac_max, self._jac_mean, self._pair_max):
            metric.reset()
            metric.to(pl_module.device)

    def observe(self, pl_module: LightningModule, outputs, batch, n: int) -> None:
        net = pl_module.net
        with monitoring(pl_module.device):
            x = batch[0][:n].clone()  # not an inference tensor
            was_training = net.training
            net.eval()
            try:
                generator = torch.Generator(device=x.device).manual_seed(self.seed)
                jac = jacobian_norm(net, x, iters=self.jacobian_iters, generator=generator)
            finally:
                net.train(was_training)
        # metric states live in the loop's (possibly inference) mode: update them outside `monitoring`
        self._jac_max.update(jac)
        self._jac_mean.update(jac)
        if self.attack_pairs:  # the validation step's adversarial pairs unless an own attack is set
            out = evaluated(pl_module, outputs, batch, n, self.attack)
            ratio = pair_ratios(out["x"], out["x_adv"], out["logits"], out["adv_logits"])
            if ratio.numel():
                self._pair_max.update(ratio)

    def finish(self, trainer: Trainer, pl_module: LightningModule) -> None:
        values: dict[str, float] = {}
        if self.first is not None:
            with monitoring(pl_module.device):
                norms = spectral_norms(pl_module.net, self.first.clone(), self.iters, self.seed)
            if norms:  # a net without recognisable layers gets no (empty-product) estimate
                values["lipschitz/layer_product_estimate"] = layer_product(norms)
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
