"""Scale decoupled distillation and NKD losses of shicaiwei123/SDD-CVPR2024 (spec: sdd.md section 2).

SDD losses take region logits B x K x N (region 0 = global, 1.. = pyramid cells). Rows are flattened
region-major: row ``r = n * B + b`` holds region n of sample b and its label is ``target[r % B]``. Each row
gets a weight from the *teacher* only: 1 when the region's argmax correctness agrees with the global
region's correctness for that sample ("consistent"), 2 otherwise ("complementary"); global rows always 1.
The total is ``sum_r w_r * l_r / (N * B)``. If it is NaN or infinite the official code prints "inf" and
returns a CUDA zero of shape (1,); here a 0-d zero on the inputs' device (no gradient) is returned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distillery.losses.math.mdistiller import _dkd_terms

__all__ = ["nkd_loss", "sdd_kd_loss", "sdd_dkd_loss", "sdd_nkd_loss"]


# ----------------------------------------------------------------------------------------- helpers
def _region_rows(patch_logits_s: Tensor, patch_logits_t: Tensor, target: Tensor, name: str):
    """Validate shapes; return student rows, teacher rows ((N*B) x K) and tiled labels (N*B,)."""
    if patch_logits_s.dim() != 3 or patch_logits_s.shape != patch_logits_t.shape:
        raise ValueError(
            f"{name}: expected student and teacher region logits of the same shape B x K x N, got "
            f"{tuple(patch_logits_s.shape)} and {tuple(patch_logits_t.shape)}"
        )
    b, k, n = patch_logits_s.shape
    if target.dim() != 1 or target.shape[0] != b:
        raise ValueError(f"{name}: target must be a 1-D tensor of {b} class indices, got shape {tuple(target.shape)}")
    rows_s = patch_logits_s.permute(2, 0, 1).reshape(n * b, k)
    rows_t = patch_logits_t.permute(2, 0, 1).reshape(n * b, k)
    return rows_s, rows_t, target.repeat(n)


def _region_weights(rows_t: Tensor, labels: Tensor, batch: int) -> Tensor:
    """w_r = 1 + [teacher region r correct XOR teacher global region of sample r % B correct]."""
    correct = rows_t.argmax(dim=1) == labels
    global_correct = correct[:batch].repeat(rows_t.shape[0] // batch)
    return 1.0 + (correct ^ global_correct).to(rows_t.dtype)


def _finite_or_zero(loss: Tensor) -> Tensor:
    """Official fallback: a NaN / infinite total becomes zero (here 0-d, same device and dtype)."""
    if torch.isnan(loss) or torch.isinf(loss):
        return loss.new_zeros(())
    return loss


def _nkd_terms(logits_s: Tensor, logits_t: Tensor, label: Tensor, temperature: float, gamma: float):
    """Per-row NKD terms (B,): target term at temperature 1 and the all-class tempered cross-entropy."""
    p_target = F.softmax(logits_t, dim=1).gather(1, label).detach()
    log_q_target = F.log_softmax(logits_s, dim=1).gather(1, label)
    target_term = -(p_target * log_q_target).squeeze(1)
    # Quirk: the official "non-target" mask scatters 1 into ones, so no class is removed.
    cross = (F.softmax(logits_t / temperature, dim=1) * F.log_softmax(logits_s / temperature, dim=1)).sum(1)
    return target_term, -gamma * temperature**2 * cross


# ------------------------------------------------------------------------------------------ losses
def nkd_loss(
    logits_s: Tensor, logits_t: Tensor, target: Tensor, temperature: float = 1.0, gamma: float = 1.5
) -> Tensor:
    """Normalized KD as implemented in SDD's ``nkd.py`` (sdd.md 2.5).

    Args: logits B x K; ``target`` B class indices (a B x K soft-label tensor is reduced by argmax).
    ``L = -mean_b p_t[y] * log q_s[y]`` (temperature 1, teacher probability detached)
    ``- gamma * T**2 * mean_b sum_c softmax(t/T)_c * log_softmax(s/T)_c``.
    Quirk (reproduced): the non-target mask keeps every class, so the second term is a tempered
    cross-entropy over all classes and the loss is not 0 when ``logits_s == logits_t``.
    Defaults T = 1, gamma = 1.5 are the constants hard-coded in the official NKD distiller.
    """
    if logits_s.dim() != 2:
        raise ValueError(f"nkd_loss: logits must be B x K, got shape {tuple(logits_s.shape)}")
    if target.dim() > 1:
        label = target.argmax(dim=1, keepdim=True)
    else:
        label = target.reshape(-1, 1)
    target_term, non_term = _nkd_terms(logits_s, logits_t, label, temperature, gamma)
    return target_term.mean() + non_term.mean()


def sdd_kd_loss(patch_logits_s: Tensor, patch_logits_t: Tensor, target: Tensor, temperature: float = 4.0) -> Tensor:
    """SD-KD: region-weighted KD over B x K x N region logits (sdd.md 2.2).

    Per row ``l_r = sum_c T**2 * KL_c(softmax(t_r/T) || softmax(s_r/T))``, where NaN elements of the KL map
    are zeroed first (SD-KD only). Total ``sum_r w_r l_r / (N*B)``; NaN/inf total -> 0.
    The official signature is ``(s, t, T, target)``; the contract order here is ``(s, t, target, T)``.
    """
    rows_s, rows_t, labels = _region_rows(patch_logits_s, patch_logits_t, target, "sdd_kd_loss")
    kl = F.kl_div(F.log_softmax(rows_s / temperature, dim=1), F.softmax(rows_t / temperature, dim=1), reduction="none")
    kl = kl * temperature**2
    kl = torch.where(torch.isnan(kl), torch.zeros_like(kl), kl)
    per_row = kl.sum(dim=1)
    weights = _region_weights(rows_t, labels, target.shape[0])
    return _finite_or_zero((per_row * weights).sum() / labels.shape[0])


def sdd_dkd_loss(
    patch_logits_s: Tensor,
    patch_logits_t: Tensor,
    target: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> Tensor:
    """SD-DKD: region-weighted DKD (official ``multi_dkd``, sdd.md 2.4).

    Per row ``l_r = (alpha * TCKD_r + beta * NCKD_r) * T**2 / (N*B)`` with the row's own label (same DKD
    math as ``mdistiller.dkd_loss``, shared helper, including the -1000 target masking); total
    ``sum_r w_r l_r``. No elementwise NaN zeroing (unlike SD-KD); a NaN/inf total -> 0. With N = 1 this
    equals ``dkd_loss``. (SD-KD cannot reuse ``kd_loss``: it zeroes NaN elements before the class sum.)
    """
    rows_s, rows_t, labels = _region_rows(patch_logits_s, patch_logits_t, target, "sdd_dkd_loss")
    tckd, nckd = _dkd_terms(rows_s, rows_t, labels, temperature)
    n_rows = labels.shape[0]
    tckd = (tckd * temperature**2 / n_rows).sum(dim=1)
    nckd = (nckd * temperature**2 / n_rows).sum(dim=1)
    per_row = alpha * tckd + beta * nckd
    weights = _region_weights(rows_t, labels, target.shape[0])
    return _finite_or_zero((per_row * weights).sum())


def sdd_nkd_loss(
    patch_logits_s: Tensor, patch_logits_t: Tensor, target: Tensor, temperature: float = 4.0, gamma: float = 8.0
) -> Tensor:
    """SD-NKD: region-weighted NKD (official ``multi_nkd_loss``, sdd.md 2.6).

    Per row the NKD terms of :func:`nkd_loss` (same all-classes quirk), ``l_r = target_r + non_r``; total
    ``sum_r w_r l_r / (N*B)``; no elementwise NaN zeroing; NaN/inf total -> 0. ``target`` must be 1-D (the
    official tiling fails on soft labels). Defaults T = 4, gamma = 8 are cfg.DKD.T and cfg.DKD.BETA.
    """
    rows_s, rows_t, labels = _region_rows(patch_logits_s, patch_logits_t, target, "sdd_nkd_loss")
    target_term, non_term = _nkd_terms(rows_s, rows_t, labels.reshape(-1, 1), temperature, gamma)
    weights = _region_weights(rows_t, labels, target.shape[0])
    return _finite_or_zero(((target_term + non_term) * weights).sum() / labels.shape[0])
