"""Loss terms of the CIARD objective (paper Eq. 7, Alg. 1) and the released code's helpers.

Convention everywhere: ``kl(student_logits, teacher_probs)`` is KL(s ‖ t) in the paper's notation,
i.e. the divergence of the student from the teacher's soft target, computed as
``sum_c p_t (log p_t - log softmax(z_s))`` (teacher as target, student log-probabilities as input,
like ``F.kl_div(log_softmax(z_s), p_t)`` and the released code's ``kl_loss``).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

Reduction = Literal["batchmean", "mean"]


def kl(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    *,
    student_temp: float = 1.0,
    reduction: Reduction = "batchmean",
    log_eps: float = 0.0,
) -> torch.Tensor:
    """KL(s ‖ t) with the teacher as target; gradients flow into the student only.

    ``batchmean`` sums over classes and averages over samples (the textbook KL);
    ``mean`` averages over samples *and* classes, as the released code's ``torch.mean(kl_loss)``
    does, which makes every KL term 1/C as large. ``log_eps`` > 0 computes the teacher's
    entropy part as p·log(p + eps), as the released code's ``kl_loss`` does (1e-5): the value
    shifts by about eps per class, the student gradient does not change.
    """
    if student_logits.shape[0] == 0:
        # An empty selection is a zero loss, never a NaN from 0/0.
        return student_logits.sum() * 0.0
    log_ps = F.log_softmax(student_logits / student_temp, dim=1)
    pt = teacher_probs.detach()
    # xlogy gives 0·log 0 = 0, so one-hot teacher targets stay finite.
    self_term = pt * torch.log(pt + log_eps) if log_eps > 0 else torch.special.xlogy(pt, pt)
    elementwise = self_term - pt * log_ps
    if reduction == "batchmean":
        return elementwise.sum(dim=1).mean()
    return elementwise.mean()


def soft_targets(teacher_logits: torch.Tensor, temp: float = 1.0) -> torch.Tensor:
    """Tempered teacher distribution softmax(z_t / temp), detached."""
    return F.softmax(teacher_logits.detach() / temp, dim=1)


def push_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    y: torch.Tensor,
    *,
    student_temp: float = 4.0,
    teacher_temp: float = 4.0,
    reduction: Reduction = "batchmean",
    log_eps: float = 0.0,
) -> torch.Tensor:
    """Contrastive push loss (Alg. 1): KL on the samples the clean teacher gets wrong.

    J = {i : argmax z_t(i) ≠ y(i)}; the loss is KL(softmax(z_s/T_s) ‖ softmax(z_t/T_t)) over J
    (averaged over J). Paper: T_s = T_t = 4; released code: T_s = 5, T_t = 1.
    Empty J gives exactly 0. The caller subtracts it (λ·Push enters Eq. 7 with a minus sign).
    J is applied as a mask, not by selecting its rows: the step never reads |J| back to the
    host (a GPU sync, and what keeps a step from being captured as a CUDA graph).
    """
    wrong = push_set(teacher_logits, y)
    return masked_kl(student_logits, soft_targets(teacher_logits, teacher_temp), wrong,
                     student_temp=student_temp, reduction=reduction, log_eps=log_eps)


def masked_kl(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    mask: torch.Tensor,
    *,
    student_temp: float = 1.0,
    reduction: Reduction = "batchmean",
    log_eps: float = 0.0,
) -> torch.Tensor:
    """:func:`kl` over the rows where ``mask`` is true, as ``kl(s[mask], t[mask])`` gives it
    (equal to ~1e-7: the sums run in another order), with the row count on the device. The
    other rows' targets are zeroed before use, so neither their values nor their gradients
    can be NaN; an empty mask gives exactly 0."""
    rows = mask[:, None]
    log_ps = F.log_softmax(student_logits / student_temp, dim=1)
    pt = torch.where(rows, teacher_probs.detach(), 0.0)
    self_term = pt * torch.log(pt + log_eps) if log_eps > 0 else torch.special.xlogy(pt, pt)
    total = torch.where(rows, self_term - pt * log_ps, 0.0).sum()
    count = mask.sum() * (1 if reduction == "batchmean" else student_logits.shape[1])
    return total / count.clamp(min=1)


def push_set(teacher_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """J of Alg. 1 as a mask: the samples whose clean-teacher prediction is wrong."""
    return teacher_logits.argmax(dim=1) != y


def _magnitude(value: float) -> int:
    # The released code nudges exact zeros (math.isclose with rel_tol only) to 1e-7 before
    # taking the order of magnitude.
    if value == 0:
        value = 1e-7
    return math.floor(math.log10(abs(value)))


def auto_lambda(kl_clean: float, kl_robust: float, push: float) -> float:
    """λ = 10^(min(mag(KL_clean), mag(KL_robust)) − mag(Push)), the released code's rule.

    It gives the push term the order of magnitude of the smaller KL term, every step. A
    non-finite input gives NaN, so the step's non-finite-loss check names the divergence.
    """
    if not all(math.isfinite(v) for v in (kl_clean, kl_robust, push)):
        return math.nan
    return 10.0 ** (min(_magnitude(kl_clean), _magnitude(kl_robust)) - _magnitude(push))


def auto_lambda_tensor(kl_clean: torch.Tensor, kl_robust: torch.Tensor,
                       push: torch.Tensor) -> torch.Tensor:
    """:func:`auto_lambda` on the device (float64, as Python's floats), so that the step
    reads nothing back to the host: the same λ for the same three values, NaN when any is not
    finite."""
    v = torch.stack([kl_clean.detach(), kl_robust.detach(), push.detach()]).double()
    mag = torch.floor(torch.log10(torch.where(v == 0, 1e-7, v).abs()))
    lam = torch.pow(10.0, torch.minimum(mag[0], mag[1]) - mag[2])
    return torch.where(torch.isfinite(v).all(), lam, math.nan)


def neg_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean of p·log p over all entries (the released code's ``entropy_value``; ≤ 0)."""
    return (probs * torch.log(probs + 1e-5)).mean()


def update_temperatures(
    tau_adv: float | torch.Tensor,
    tau_nat: float | torch.Tensor,
    robust_teacher_adv_logits: torch.Tensor,
    clean_teacher_nat_logits: torch.Tensor,
    *,
    lr: float = 1e-3,
    low: float = 1.0,
    high: float = 10.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the released code's adaptive teacher temperatures.

    Each temperature moves by ``lr`` in the direction that equalises the entropies of the
    tempered robust-teacher (on x*) and clean-teacher (on x) distributions, clipped to [low, high].
    The temperatures are 0-dim float64 tensors on the logits' device: the arithmetic of
    Python's floats (the released code's), without reading a value back to the host.
    """
    dev = robust_teacher_adv_logits.device
    tau_adv = torch.as_tensor(tau_adv, dtype=torch.float64, device=dev)
    tau_nat = torch.as_tensor(tau_nat, dtype=torch.float64, device=dev)
    h_adv = neg_entropy(soft_targets(robust_teacher_adv_logits, tau_adv)).double()
    h_nat = neg_entropy(soft_targets(clean_teacher_nat_logits, tau_nat)).double()
    # Ratios of the two negative entropies equal ratios of entropies; a ratio above 1 means the
    # first distribution is the flatter one, so its temperature goes down.
    new_adv = torch.where(h_nat != 0, tau_adv - lr * torch.sign(h_adv / h_nat - 1.0), tau_adv)
    new_nat = torch.where(h_adv != 0, tau_nat - lr * torch.sign(h_nat / h_adv - 1.0), tau_nat)
    return new_adv.clamp(low, high), new_nat.clamp(low, high)
