"""Loss maths shared by attacks and methods, as pure per-sample functions of logits.

Every function returns one value per sample (shape (N,)); reduce with ``.mean()`` where a method needs a
scalar. Notation: z = logits (N, K), y = labels (N,).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lit_robust.errors import ConfigError


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CE(z, y) = -log softmax(z)_y = logsumexp(z) - z_y, per sample."""
    return F.cross_entropy(logits, y, reduction="none")


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin  m(z, y) = max_{j != y} z_j - z_y  (positive iff misclassified), per sample."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return others.amax(dim=1) - z_y


ATTACK_LOSSES = {"ce": cross_entropy, "margin": margin}
"""Untargeted attack objectives by name: an attack maximises ``ATTACK_LOSSES[name](z, y)``."""


def targeted_objective(name: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Objective a targeted attack maximises to reach class t:
    ``-CE(z, t)`` for ``"ce"``, and ``z_t - max_{j != t} z_j = -m(z, t)`` for ``"margin"``."""
    return -ATTACK_LOSSES[name](logits, target)


def negative_margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-class negative margin of Robey et al. (2024), eq. 13:  M(z, y)_j = z_j - z_y,  shape (N, K).

    ``M_y = 0``; the sample is misclassified iff ``max_{j != y} M_j > 0`` (up to ties)."""
    return logits - logits.gather(1, y[:, None])


def kl_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """KL( softmax(z_p) || softmax(z_q) ) = sum_k p_k (log p_k - log q_k), per sample.

    With ``eps > 0`` the second log is ``log(q_k + eps)`` (MART's official numerics); with 0 it is the exact
    ``log_softmax``. Terms with p_k = 0 count 0."""
    p = logits_p.softmax(dim=1)
    log_q = logits_q.log_softmax(dim=1) if eps == 0 else (logits_q.softmax(dim=1) + eps).log()
    return (torch.xlogy(p, p) - p * log_q).sum(dim=1)


def trades(logits: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """The sum of :func:`trades_terms`: the TRADES loss per sample."""
    terms = trades_terms(logits, logits_adv, y, beta)
    return terms["natural"] + terms["robust"]


def trades_terms(
    logits: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float
) -> dict[str, torch.Tensor]:
    """TRADES (Zhang et al., ICML 2019), per sample, as its two terms ``natural`` and ``robust``:

        L_i = CE(f(x_i), y_i) + beta * KL( softmax(f(x_i)) || softmax(f(x'_i)) )

    Its mean over the batch is the official loss (``KLDivLoss(reduction="sum") / B`` = batchmean KL).
    Gradients flow through both f(x) and f(x')."""
    return {"natural": cross_entropy(logits, y), "robust": beta * kl_divergence(logits, logits_adv)}


def mart(logits: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """The sum of :func:`mart_terms`: the MART loss per sample."""
    terms = mart_terms(logits, logits_adv, y, beta)
    return terms["bce"] + terms["robust"]


def mart_terms(
    logits: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float
) -> dict[str, torch.Tensor]:
    """MART (Wang et al., ICLR 2020), per sample, as its terms ``bce`` and ``robust``, with the official
    implementation's constants:

        BCE(p', y)  = -log p'_y - log(1.0001 - p'_{y'} + 1e-12),  y' = argmax_{k != y} p'_k
        L_i = BCE(p'_i, y_i) + beta * KL( p_i || p'_i ) * (1.0000001 - p_{i,y_i})

    with p = softmax(f(x)), p' = softmax(f(x')) and the KL's inner log taken of ``p' + 1e-12``. The weight
    (1 - p_y(x)) boosts misclassified clean samples and is not detached (gradient flows through it)."""
    probs_adv = logits_adv.softmax(dim=1)
    runner_up = probs_adv.scatter(1, y[:, None], float("-inf")).argmax(dim=1)
    p_runner_up = probs_adv.gather(1, runner_up[:, None]).squeeze(1)
    bce = cross_entropy(logits_adv, y) - torch.log(1.0001 - p_runner_up + 1e-12)
    p_true = logits.softmax(dim=1).gather(1, y[:, None]).squeeze(1)
    return {"bce": bce, "robust": beta * kl_divergence(logits, logits_adv, eps=1e-12) * (1.0000001 - p_true)}


def sbeta_weights(margins: torch.Tensor, mu: float) -> torch.Tensor:
    """SBETA-AT's class weights (Robey et al. 2024, eq. 34), over the K-1 wrong classes of each sample:

        lambda_j = exp(mu * M_j) / sum_{j' != y} exp(mu * M_j'),   margins of shape (B, K-1).

    mu -> inf gives the one-hot weight of BETA-AT's chosen class; mu -> 0 the uniform mean."""
    return torch.softmax(mu * margins, dim=1)


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio, per sample (needs >= 3 classes):

        DLR(z, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)

    where pi sorts the logits in decreasing order. Positive iff misclassified; invariant to shifting and
    (up to the 1e-12) to positive rescaling of the logits.
    """
    if logits.shape[1] < 3:
        raise ConfigError(f"the DLR loss needs at least 3 classes, got logits of shape {tuple(logits.shape)}")
    top = logits.topk(3, dim=1).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return -(z_y - z_other) / (top[:, 0] - top[:, 2] + 1e-12)


def targeted_dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR towards class t, per sample (needs >= 4 classes):

        DLR_t(z, y, t) = -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)

    where pi sorts the logits in decreasing order. Shift invariant and (up to the 1e-12) scale invariant.
    """
    if logits.shape[1] < 4:
        raise ConfigError(
            f"the targeted DLR loss needs at least 4 classes, got logits of shape {tuple(logits.shape)}"
        )
    top = logits.topk(4, dim=1).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def gap_loss(logits: torch.Tensor, y: torch.Tensor, z: float) -> torch.Tensor:
    """L2NNN's confidence-gap loss L_c (Qian & Wegman 2019, eq. 6), per sample:

        L_c = log(1 - softmax(z y)_label) / z = ( LSE_{j != label}(z y_j) - LSE_j(z y_j) ) / z

    computed with log-sum-exps, so it stays finite where the naive form is -inf (z * gap >~ 17 in
    float32). For large z it tends to -(y_label - max_{j != label} y_j) on correct points and to 0 on
    wrong ones: minimising it enlarges the confidence gap."""
    scaled = z * logits
    others = scaled.scatter(1, y[:, None], float("-inf"))
    return (torch.logsumexp(others, dim=1) - torch.logsumexp(scaled, dim=1)) / z


def l2nnn(
    logits_a: torch.Tensor,
    logits_b: torch.Tensor,
    logits_c: torch.Tensor,
    y: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor | float,
    gamma: float,
    omega: float,
    z: float,
) -> torch.Tensor:
    """L2NNN loss (Qian & Wegman 2019, eqs. 3-6), per sample:

        L = CE(u * y_a, label) + gamma * CE(v * y_b, label) + omega * L_c(y_c, label; z)

    with trainable per-class scales u (K,) and a common scale v. Plain L2NNN passes the same clean logits
    three times; the adversarially trained variant (Model 4) passes logits of adversarial inputs as y_a
    (and optionally y_b), with L_c always on clean inputs."""
    return (
        cross_entropy(logits_a * u, y)
        + gamma * cross_entropy(logits_b * v, y)
        + omega * gap_loss(logits_c, y, z)
    )
