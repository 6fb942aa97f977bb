"""The one attack abstraction every attack in lit_robust derives from.

``Attack.__call__(model, x, y) -> x_adv`` owns everything that attack code usually gets wrong, so that
subclasses only write the search in :meth:`Attack.perturb`:

- the model runs in eval mode during the attack (configurable) and its mode is restored afterwards;
  with ``eval_mode=False`` BatchNorm running statistics are restored too;
- gradients are enabled even inside ``torch.no_grad()`` / ``torch.inference_mode()`` (Lightning's
  validation and test loops); the perturbation, projection and loss reduction are fp32, while the model's
  forward and backward follow the caller's precision: under autocast (a trainer with
  ``precision="bf16-mixed"``) they run in that dtype, unless ``precision="fp32"`` opts out;
- input gradients come from ``torch.autograd.grad``, so parameters' ``.grad`` are never touched;
- the result is projected onto the eps-ball around x and onto the box [0, 1].
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator

import torch
from torch import nn

from lit_robust.attacks.threat import Ball, canonical_norm, make_ball
from lit_robust.errors import ConfigError, NonFiniteAttackError
from lit_robust.validate import choice, radius

_BOX_TOL = 1e-6


PRECISIONS = ("auto", "fp32")


def _device_type(model: nn.Module) -> str:
    return next((p.device.type for p in model.parameters()), "cpu")


def caller_autocast(model: nn.Module) -> tuple[str, torch.dtype] | None:
    """``(device_type, dtype)`` of the autocast region the caller is in for ``model``'s device (Lightning's
    ``precision="bf16-mixed"`` runs training and validation steps in one), or None outside autocast."""
    device_type = _device_type(model)
    if not torch.is_autocast_enabled(device_type):
        return None
    return device_type, torch.get_autocast_dtype(device_type)


@contextlib.contextmanager
def attack_mode(model: nn.Module, eval_mode: bool = True) -> Iterator[None]:
    """Run the body with grads on, autocast off and ``model`` in eval mode; restore the model's mode
    (and, if it stayed in train mode, its buffers such as BatchNorm statistics) on exit. Attacks re-enter
    the caller's autocast around the model's forward only (:meth:`Attack.logits`)."""
    was_training = model.training
    buffers = None if eval_mode else [(b, b.detach().clone()) for b in model.buffers()]
    device_type = _device_type(model)
    try:
        if eval_mode:
            model.eval()
        with (
            torch.inference_mode(False),
            torch.enable_grad(),
            torch.autocast(device_type=device_type, enabled=False),
        ):
            yield
    finally:
        model.train(was_training)
        if buffers is not None:
            with torch.no_grad():
                for buf, saved in buffers:
                    buf.copy_(saved)


class Attack(ABC):
    """Base class: ``x_adv = attack(model, x, y)`` with ``||x_adv - x|| <= eps`` and ``x_adv in [0,1]``.

    Args:
        eps: radius of the threat model, in input units ([0,1] pixels; e.g. 0.3 or 8/255 for L_inf).
            None: taken from the method the attack belongs to (``model.eps``).
        norm: ``"inf"`` (L_inf) or ``"2"`` (L_2). None: the method's ``model.norm`` (L_inf standalone).
        eval_mode: run the model in eval mode during the attack (BatchNorm/dropout frozen). With
            ``False`` the model keeps its current mode and BatchNorm buffers are restored afterwards.
        seed: if set, the attack's randomness comes from its own generator seeded with this value on
            every call (repeatable evaluations); if None it uses torch's global RNG.
        precision: ``"auto"``: the model's forward and backward run in the caller's autocast dtype
            (bf16 under a ``bf16-mixed`` trainer; fp32 outside autocast, e.g. in ``evaluate``);
            ``"fp32"``: always fp32. Perturbation, projection and loss reduction are fp32 either way.
            Methods set it for their attacks from ``model.attack_precision``.
    """

    #: set during a call: the caller's autocast for the model's forward, and the model's input dtype
    _amp: tuple[str, torch.dtype] | None = None
    _input_dtype: torch.dtype | None = None

    def __init__(
        self,
        eps: float | None = None,
        norm: str | None = None,
        eval_mode: bool = True,
        seed: int | None = None,
        precision: str = "auto",
    ) -> None:
        self._norm = None if norm is None else canonical_norm(norm)
        self._eps: float | None = None
        self.ball: Ball | None = None
        if eps is not None:
            self.eps = eps
        self.eval_mode = bool(eval_mode)
        self.seed = seed
        self.precision = precision

    @property
    def precision(self) -> str:
        """``"auto"`` (follow the caller's autocast) or ``"fp32"``."""
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        self._precision = choice(f"{type(self).__name__}.precision", value, PRECISIONS)

    @property
    def norm(self) -> str:
        """``"inf"`` or ``"2"`` (``"inf"`` while unset and unbound)."""
        return self._norm or "inf"

    @property
    def eps(self) -> float | None:
        """Radius of the threat model; settable (e.g. by an eps warm-up schedule)."""
        return self._eps

    @eps.setter
    def eps(self, value: float) -> None:
        self._eps = radius(f"{type(self).__name__}.eps", value)
        self.ball = make_ball(self.norm, self._eps)

    def bind(self, eps: float, norm: str) -> Attack:
        """Fill in the threat model where the attack leaves it open (``eps``/``norm`` None): methods bind
        their attacks to ``model.eps``/``model.norm``, so the threat model is configured once."""
        if self._norm is None:
            self._norm = canonical_norm(norm)
        self.eps = eps if self._eps is None else self._eps
        return self

    # ------------------------------------------------------------------ public API
    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Adversarial examples for ``(x, y)``; ``target`` gives target classes for targeted attacks."""
        if self._eps is None:
            raise ConfigError(
                f"{type(self).__name__} has no eps: pass eps=..., or give the attack to a method, which sets "
                "it from model.eps"
            )
        self._check_inputs(x, y)
        with self.running(model):
            x0 = x.detach().to(torch.float32).clone()
            y0 = y.detach().clone()
            generator = self._generator(x0.device)
            if target is not None:
                target = target.detach().clone()
            x_adv = self.perturb(model, x0, y0, generator=generator, target=target)
            x_adv = self.clip(x0, x_adv.detach())
        finite = torch.isfinite(x_adv.flatten(1)).all(1)
        if not finite.all():
            raise NonFiniteAttackError(
                f"{type(self).__name__} produced non-finite inputs for {int((~finite).sum())} of "
                f"{len(finite)} images (the model's gradient there is NaN or infinite); they are not used"
            )
        return x_adv.to(x.dtype)

    @abstractmethod
    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator | None = None,
        target: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The search itself: return candidate adversarial inputs (fp32, same shape as ``x``).

        Called with grads enabled and the model in the right mode; the result is clipped afterwards."""

    # ------------------------------------------------------------------ helpers for subclasses
    def project_delta(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Feasible perturbation: project ``delta`` onto the eps-ball, then clip so x + delta is in [0, 1]
        (clipping only shrinks coordinates, so the result stays in the ball)."""
        return (x + self.ball.project(delta)).clamp(0.0, 1.0) - x

    def clip(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """Project ``x_adv`` onto {x + delta : ||delta|| <= eps} and then onto [0, 1]."""
        return (x + self.ball.project(x_adv - x)).clamp(0.0, 1.0)

    def ascend(
        self,
        x: torch.Tensor,
        x_adv: torch.Tensor,
        grad: torch.Tensor,
        step_size: float,
        box: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """One projected ascent step, ``clip(x, x_adv + step_size * dir(grad))`` (dir = sign for L_inf,
        g/||g||_2 for L_2). With ``box = self.ball.feasible_box(x)`` (L_inf: the feasible set is the box
        [lo, hi]) the step is one fused add and one clamp, the fewest passes over the batch."""
        if box is not None:
            return torch.add(x_adv, grad.sign(), alpha=step_size).clamp_(box[0], box[1])
        return self.clip(x, x_adv + step_size * self.ball.ascent_direction(grad))

    @contextlib.contextmanager
    def running(self, model: nn.Module) -> Iterator[None]:
        """The context of one attack call: :func:`attack_mode`, with the caller's autocast (``precision
        "auto"``) and the model's input dtype noted once for :meth:`logits`, not looked up per step."""
        saved = self._amp, self._input_dtype
        self._amp = caller_autocast(model) if self.precision == "auto" else None
        param = next((p for p in model.parameters() if p.is_floating_point()), None)
        self._input_dtype = None if param is None else param.dtype
        try:
            with attack_mode(model, self.eval_mode):
                yield
        finally:
            self._amp, self._input_dtype = saved

    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Model logits in fp32, feeding the input in the model's own floating dtype; the forward (and so
        its backward) runs under the caller's autocast when :meth:`running` found one."""
        dtype = self._input_dtype
        if dtype is None and self._amp is None:  # called outside running(): look the dtype up
            param = next((p for p in model.parameters() if p.is_floating_point()), None)
            dtype = None if param is None else param.dtype
        inp = x if dtype is None or dtype == x.dtype else x.to(dtype)
        if self._amp is None:
            out = model(inp)
        else:
            with torch.autocast(device_type=self._amp[0], dtype=self._amp[1]):
                out = model(inp)
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(f"attacks need a model that returns logits of shape (N, classes); got {shape}")
        return out.float()

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        return torch.Generator(device=device).manual_seed(int(self.seed))

    def _check_inputs(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if not x.is_floating_point():
            raise ConfigError(f"attack inputs must be floating point in [0, 1], got dtype {x.dtype}")
        if y.dim() != 1 or x.shape[0] != y.shape[0]:
            raise ConfigError(
                f"attack got {x.shape[0]} inputs but labels of shape {tuple(y.shape)}: "
                f"expected ({x.shape[0]},)"
            )
        if not x.numel():
            return
        lo, hi = (float(v) for v in x.detach().aminmax())  # one host sync per call, none per step
        if lo < -_BOX_TOL or hi > 1 + _BOX_TOL:
            raise ConfigError(
                f"attack inputs must lie in [0, 1] (got min {lo:.3g}, max {hi:.3g}): "
                "normalisation belongs inside the model (see lit_robust.nets.Normalize)"
            )

    def __repr__(self) -> str:
        hidden = ("ball", "_amp", "_input_dtype")
        state = {
            k.lstrip("_"): v for k, v in vars(self).items() if k not in hidden and not k.startswith("last_")
        }
        fields = ", ".join(f"{k}={v!r}" for k, v in state.items())
        return f"{type(self).__name__}({fields})"


class WorstCase:
    """Per-sample worst case seen so far, for attacks that keep their best iterate or several runs:
    a successful point beats an unsuccessful one, then the higher objective wins. Uses torch.where only,
    so updating inside an attack loop never syncs with the host."""

    def __init__(
        self, x: torch.Tensor, success: torch.Tensor | None = None, value: torch.Tensor | None = None
    ) -> None:
        n = x.shape[0]
        self.x = x.clone()
        self.success = (
            torch.zeros(n, dtype=torch.bool, device=x.device) if success is None else success.clone()
        )
        self.value = torch.full((n,), float("-inf"), device=x.device) if value is None else value.clone()

    @staticmethod
    def _better(success, value, old_success, old_value) -> torch.Tensor:
        return (success & ~old_success) | ((success == old_success) & (value > old_value))

    def update(self, x_new: torch.Tensor, success: torch.Tensor, value: torch.Tensor) -> None:
        """Keep, per sample, the worse of the stored point and ``x_new``."""
        better = self._better(success, value, self.success, self.value)
        self.x = torch.where(better.view(-1, *([1] * (x_new.dim() - 1))), x_new, self.x)
        self.success = self.success | success
        self.value = torch.where(better, value, self.value)

    def merge(
        self, idx: torch.Tensor, x_new: torch.Tensor, success: torch.Tensor, value: torch.Tensor
    ) -> None:
        """``update`` restricted to the samples ``idx`` (the sub-batch a run attacked)."""
        better = self._better(success, value, self.success[idx], self.value[idx])
        mask = better.view(-1, *([1] * (x_new.dim() - 1)))
        self.x[idx] = torch.where(mask, x_new, self.x[idx])
        self.success[idx] = self.success[idx] | success
        self.value[idx] = torch.where(better, value, self.value[idx])
