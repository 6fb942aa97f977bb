"""Adversarial weight perturbation (Wu, Xia, Wang, NeurIPS 2020, "Adversarial weight perturbation helps
robust generalization"), the "AWP" of Kanai et al.'s Tables 1-3.

AWP minimises max_{v in V} L(theta + v) with a layer-wise feasible set
V_l = {v_l : ||v_l|| = gamma_A ||theta_l||} (Kanai et al. eq. 76) over the conv and linear weights
(parameters with >= 2 dimensions; biases and BatchNorm parameters are not perturbed).
The maximisation is one ascent step, rescaled per layer:

    g_l = grad_{theta_l} loss(theta)       (the method's training loss at the fixed adversarial inputs,
                                            net in train mode; BatchNorm running statistics are restored)
    v_l = gamma_A ||theta_l|| g_l / (||g_l|| + 1e-20)

The official code copies the weights into a proxy network, takes one plain SGD step of lr 0.01 (0.1 for
TRADES) on -loss and uses diff_l = proxy_l - theta_l = lr g_l rescaled to ||theta_l||: the rescaling
removes the lr, so the direction above is the same without a proxy network or its lr. The training
gradient is then taken at theta + v and the perturbation removed before the update is applied to theta
(:meth:`AWP.perturbed` restores the saved weights bit-exactly). Inside EntropySGD's chain theta is the
current Langevin sample theta' (Algorithm 1 line 9).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from lit_robust.validate import positive

EPS = 1e-20


def awp_direction(weight: torch.Tensor, grad: torch.Tensor, gamma: float, eps: float = EPS) -> torch.Tensor:
    """v = gamma ||w|| g / (||g|| + eps): the ascent direction g rescaled to the relative norm gamma."""
    return grad * (gamma * weight.norm() / (grad.norm() + eps))


def perturbable(model: nn.Module) -> list[nn.Parameter]:
    """The weights AWP perturbs: trainable parameters with >= 2 dimensions (conv and linear weights)."""
    return [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]


class AWP:
    """Adversarial weight perturbation with relative size ``gamma`` (gamma_A).

    Usage (any method, with or without EntropySGD)::

        v = awp.perturbation(net, lambda: loss_fn())      # loss at the current weights
        with AWP.perturbed(v):                            # weights theta + v
            loss = loss_fn(); loss.backward()             # gradient at theta + v
        optimizer.step()                                  # update applied to theta

    Args:
        gamma: gamma_A, the perturbation's norm relative to each weight's norm (paper: 0.01 for AWP with
            SGD, 0.005 with EnSGD on CIFAR-10 and SVHN, 0.007 on CIFAR-100; 0.005 for TRADES).
        train_mode: compute the ascent gradient with the net in train mode (official: the proxy is in
            train mode); BatchNorm buffers are restored either way.
    """

    def __init__(self, gamma: float = 0.01, train_mode: bool = True) -> None:
        self.gamma = positive("AWP.gamma", gamma)
        self.train_mode = bool(train_mode)

    def perturbation(
        self, model: nn.Module, loss_fn: Callable[[], torch.Tensor]
    ) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """``[(weight, v)]`` for every perturbable weight of ``model``; ``loss_fn()`` evaluates the loss to
        ascend at the current weights. Leaves parameters, ``.grad``, buffers and the mode unchanged."""
        params = perturbable(model)
        buffers = [(b, b.detach().clone()) for b in model.buffers()]
        was_training = model.training
        try:
            model.train(self.train_mode)
            with torch.enable_grad():
                grads = torch.autograd.grad(loss_fn(), params, allow_unused=True)
        finally:
            model.train(was_training)
            with torch.no_grad():
                for buf, saved in buffers:
                    buf.copy_(saved)
        return [
            (p, awp_direction(p.detach(), g.detach(), self.gamma))
            for p, g in zip(params, grads, strict=True)
            if g is not None
        ]

    @staticmethod
    @contextlib.contextmanager
    def perturbed(perturbation: list[tuple[nn.Parameter, torch.Tensor]] | None) -> Iterator[None]:
        """Weights theta + v inside the block; the saved theta is copied back on exit (bit-exact)."""
        if not perturbation:
            yield
            return
        saved = [(p, p.detach().clone()) for p, _ in perturbation]
        try:
            with torch.no_grad():
                for p, v in perturbation:
                    p.add_(v)
            yield
        finally:
            with torch.no_grad():
                for p, w in saved:
                    p.copy_(w)

    def __repr__(self) -> str:
        return f"AWP(gamma={self.gamma}, train_mode={self.train_mode})"
