"""L2-nonexpansive neural networks (Qian & Wegman, ICLR 2019, "L2-Nonexpansive Neural Networks").

Every layer of the net is 1-Lipschitz in L2 and each class has its own logit head, so the prediction is
certified within radius gap / 2 (gap = top1 - top2 logit). Training enlarges the gap directly:

    L = CE(u * y, label) + gamma * CE(v * y, label) + omega * L_c(y, label; z)  [+ lambda_w * sum_l L_W(W_l)]

with trainable per-class scales u and a common scale v (loss-only parameters: the classifier's logits
are y, without u or v). Model 4 of the paper computes the first term on L_inf PGD adversarial examples
(``train_attack``), the attack maximising CE(u * y) with u held fixed.
"""

from __future__ import annotations

import torch
from torch import nn

from lit_robust.attacks import Attack
from lit_robust.diagnostics.gaps import certified_correct, confidence_gap, correct_gap, net_certificate
from lit_robust.errors import ConfigError
from lit_robust.losses import gap_loss, l2nnn
from lit_robust.methods.base import RobustClassifier
from lit_robust.validate import non_negative, positive

WEIGHT_SCHEMES = ("strict", "penalty", "penalty_then_strict", "none")


class _ScaledLogits(nn.Module):
    """The attacked model of Model 4: x -> u * net(x), with u fixed."""

    def __init__(self, net: nn.Module, scale: torch.Tensor) -> None:
        super().__init__()
        self.net, self.scale = net, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * self.scale


class L2NNN(RobustClassifier):
    """L2NNN training (Model 3), or with ``train_attack`` adversarial training of L_a (Model 4).

    Args:
        net: an L2NNN net (:class:`lit_robust.nets.L2NNNConvNet`): it must provide
            ``set_weight_scheme``, ``weight_penalty`` and ``lipschitz_certificate``.
        gamma: weight of L_b.
        omega: weight of the gap loss L_c (0: the "no L_c" ablation).
        z: temperature of L_c (want z * typical gap >~ 5: 10 for MNIST, 30-50 for CIFAR-10).
        u_init: initial value of the K trainable scales u of L_a.
        v_init: initial value of the scale v of L_b.
        v_trainable: whether v is trained (otherwise a fixed hyperparameter).
        weight_scheme: "strict" (W / sqrt(b(W)) from the start), "penalty" (raw W plus
            lambda_w * sum L_W; an approximate L2NNN), "penalty_then_strict" (penalty until
            ``switch_epoch``, then strict: the authors' recipe) or "none" (no constraint: an ablation).
            It overrides the net's own setting.
        lambda_w: weight of the penalty L_W.
        switch_epoch: first strict epoch of "penalty_then_strict" (default: 80% of max_epochs).
        train_attack: adversary for L_a (Model 4), e.g. L_inf PGD with eps 0.3, 40 x 0.01 on MNIST; give
            its eps and norm explicitly (the module's eps/norm are the L_2 evaluation threat model).
        adv_on: "a" (adversarial inputs in L_a only, the paper's Model 4) or "ab" (in L_a and L_b).
        radii: L_2 radii at which validation/test log certified accuracy ``{stage}/certified_acc@r``
            (with ``{stage}/mean_gap``, ``{stage}/mean_correct_gap`` and ``{stage}/lipschitz_bound``).
        eps, norm: evaluation threat model (default L_2, eps 3.0: the paper's MNIST setting).
        **kwargs: see :class:`~lit_robust.methods.base.RobustClassifier`.
    """

    #: this method logs the clean gap means and certified accuracy itself (ConfidenceGap then skips them)
    logs_gap_metrics = True

    def __init__(
        self,
        gamma: float = 1.0,
        omega: float = 1.0,
        z: float = 10.0,
        u_init: float = 10.0,
        v_init: float = 10.0,
        v_trainable: bool = True,
        weight_scheme: str = "strict",
        lambda_w: float = 1.0,
        switch_epoch: int | None = None,
        train_attack: Attack | None = None,
        adv_on: str = "a",
        radii: list[float] = (0.5, 1.0, 2.0),  # type: ignore[assignment]
        eps: float = 3.0,
        norm: str = "2",
        **kwargs,
    ) -> None:
        super().__init__(eps=eps, norm=norm, **kwargs)
        for needed in ("set_weight_scheme", "weight_penalty", "lipschitz_certificate"):
            if not hasattr(self.net, needed):
                raise ConfigError(
                    f"model.net must be an L2NNN net such as lit_robust.nets.L2NNNConvNet (it needs "
                    f"{needed}()), got {type(self.net).__name__}"
                )
        if weight_scheme not in WEIGHT_SCHEMES:
            raise ConfigError(
                f"model.weight_scheme must be one of {list(WEIGHT_SCHEMES)}, got {weight_scheme!r}"
            )
        if adv_on not in ("a", "ab"):
            raise ConfigError(f"model.adv_on must be 'a' or 'ab', got {adv_on!r}")
        if switch_epoch is not None and (not isinstance(switch_epoch, int) or switch_epoch < 0):
            raise ConfigError(f"model.switch_epoch must be an int >= 0 or null, got {switch_epoch!r}")
        self.radii = [non_negative("model.radii", r) for r in radii]
        self.gamma, self.omega = non_negative("model.gamma", gamma), non_negative("model.omega", omega)
        self.z, self.lambda_w = positive("model.z", z), non_negative("model.lambda_w", lambda_w)
        self.weight_scheme, self.switch_epoch, self.adv_on = weight_scheme, switch_epoch, adv_on
        k = self.net.num_classes
        self.u = nn.Parameter(torch.full((k,), positive("model.u_init", u_init)))
        v = torch.tensor(positive("model.v_init", v_init))
        if v_trainable:
            self.v = nn.Parameter(v)
        else:
            self.register_buffer("v", v)
        self.train_attack = None if train_attack is None else self.bind_attack(train_attack)
        self.net.set_weight_scheme("penalty" if weight_scheme == "penalty_then_strict" else weight_scheme)

    # ------------------------------------------------------------------ weight scheme schedule
    def _switch_epoch(self) -> int:
        if self.switch_epoch is not None:
            return self.switch_epoch
        max_epochs = self.trainer.max_epochs if self._trainer is not None else None
        if max_epochs is None or max_epochs < 0:
            raise ConfigError("model.switch_epoch is needed when trainer.max_epochs is not set")
        return int(0.8 * max_epochs)

    def on_train_epoch_start(self) -> None:
        if self.weight_scheme == "penalty_then_strict" and self.net.weight_scheme == "penalty":
            if self.current_epoch >= self._switch_epoch():
                self.net.set_weight_scheme("strict")

    # ------------------------------------------------------------------ loss
    def training_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        logits_a = logits_b = logits
        if self.train_attack is not None:
            x_adv = self.train_attack(_ScaledLogits(self.net, self.u.detach()), x, y)
            logits_a = self(x_adv)
            logits_b = logits_a if self.adv_on == "ab" else logits
            self.log_accuracy("train", "robust", logits_a, y)
        self.log_accuracy("train", "clean", logits, y)
        loss = l2nnn(logits_a, logits_b, logits, y, self.u, self.v, self.gamma, self.omega, self.z).mean()
        if self.net.weight_scheme == "penalty":
            penalty = self.net.weight_penalty()
            self.log("train/weight_penalty", penalty, on_step=True, on_epoch=True)
            loss = loss + self.lambda_w * penalty
        with torch.no_grad():
            self.log("train/gap_loss", gap_loss(logits, y, self.z).mean(), on_step=False, on_epoch=True)
            self.log("train/mean_correct_gap", correct_gap(logits, y).mean(), on_step=False, on_epoch=True)
            self.log("train/u_mean", self.u.mean(), on_step=False, on_epoch=True)
            self.log("train/v", self.v, on_step=False, on_epoch=True)
        return loss

    # ------------------------------------------------------------------ evaluation extras
    def log_evaluation_extras(self, stage: str, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Mean gaps, certified accuracy at ``radii`` and the Lipschitz bound of the certificate."""
        lipschitz, per_logit = net_certificate(self.net)
        n = y.shape[0]
        opts = dict(on_step=False, on_epoch=True, sync_dist=True, batch_size=n)
        self.log(f"{stage}/mean_gap", confidence_gap(logits).mean(), **opts)
        self.log(f"{stage}/mean_correct_gap", correct_gap(logits, y).mean(), **opts)
        certified = certified_correct(logits, y, self.radii, lipschitz, per_logit).float().mean(dim=0)
        for radius, acc in zip(self.radii, certified, strict=True):
            self.log(f"{stage}/certified_acc@{radius!r}", acc, **opts)
        self.log(f"{stage}/lipschitz_bound", lipschitz, **opts)
