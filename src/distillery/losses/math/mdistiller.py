"""Classification distillation losses of megvii-research/mdistiller (spec: mdistiller.md section 2).

Pure functions: tensors in, an unweighted 0-d tensor out (the method's outer weight is applied by the
distiller module). Notation: B batch, K classes, C channels, H x W spatial size. ``normalize`` below is
``F.normalize`` (divide by ``max(||x||_2, 1e-12)``). Quirks of the official code are reproduced and listed
in each docstring. Functions taking lists of stage features pair them with ``zip`` (the shorter list wins)
and raise ``ValueError`` on empty lists (the official code returns the Python number 0 there).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "kd_loss",
    "dkd_loss",
    "at_loss",
    "nst_loss",
    "sp_loss",
    "kdsvd_loss",
    "ofd_loss",
    "vid_loss",
    "hcl_loss",
]


# ----------------------------------------------------------------------------------------- helpers
def _stage_pairs(feats_s: Sequence[Tensor], feats_t: Sequence[Tensor], name: str) -> list[tuple[Tensor, Tensor]]:
    """Zip two lists of stage features (truncating to the shorter one); raise on an empty result."""
    pairs = list(zip(feats_s, feats_t))
    if not pairs:
        raise ValueError(f"{name}: needs at least one (student, teacher) stage pair, got empty lists")
    return pairs


def _pool_to_square(f_s: Tensor, f_t: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """AT/NST/VID spatial matching: pool the taller map to (h, h), h = the smaller height.

    Only heights are compared and the target size is always square (official quirk). Raises when the
    spatial sizes still differ afterwards (the official code then fails on a shape mismatch).
    """
    h_s, h_t = f_s.shape[2], f_t.shape[2]
    if h_s > h_t:
        f_s = F.adaptive_avg_pool2d(f_s, (h_t, h_t))
    elif h_t > h_s:
        f_t = F.adaptive_avg_pool2d(f_t, (h_s, h_s))
    if f_s.shape[2:] != f_t.shape[2:]:
        raise ValueError(
            f"{name}: spatial sizes {tuple(f_s.shape[2:])} and {tuple(f_t.shape[2:])} do not match after "
            "square pooling (only the height is compared; non-square maps need equal heights and widths)"
        )
    return f_s, f_t


# ------------------------------------------------------------------------------------ logit losses
def kd_loss(logits_s: Tensor, logits_t: Tensor, temperature: float = 4.0) -> Tensor:
    """Hinton KD: ``T**2 * mean_b KL(softmax(t_b/T) || softmax(s_b/T))`` (mdistiller.md 2.1).

    Args: ``logits_s``, ``logits_t`` B x K; ``temperature`` T (default 4 = mdistiller/SDD CIFAR configs;
    ImageNet 1; D3still's configs use 2, which its distiller must pass explicitly).
    KL uses ``torch.kl_div`` semantics (terms with teacher probability 0 count 0); summed over classes,
    averaged over the batch, then multiplied by T**2. No detach (the teacher comes from no_grad). Identical
    in D3still (``vanillakd_loss``) and SDD.
    """
    log_q = F.log_softmax(logits_s / temperature, dim=1)
    p = F.softmax(logits_t / temperature, dim=1)
    return F.kl_div(log_q, p, reduction="none").sum(1).mean() * temperature**2


def _dkd_terms(logits_s: Tensor, logits_t: Tensor, target: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Per-element DKD KL maps, not reduced and not yet times T**2: TCKD (B x 2) and NCKD (B x K)."""
    gt = torch.zeros_like(logits_s).scatter_(1, target.reshape(-1, 1), 1).bool()
    other = ~gt
    p_s = F.softmax(logits_s / temperature, dim=1)
    p_t = F.softmax(logits_t / temperature, dim=1)
    # binary (target, non-target) probabilities; plain log, no eps (official quirk)
    b_s = torch.cat([(p_s * gt).sum(1, keepdim=True), (p_s * other).sum(1, keepdim=True)], dim=1)
    b_t = torch.cat([(p_t * gt).sum(1, keepdim=True), (p_t * other).sum(1, keepdim=True)], dim=1)
    tckd = F.kl_div(torch.log(b_s), b_t, reduction="none")
    # non-target distribution: subtract exactly 1000 from the target logit after dividing by T (quirk)
    p_t_non = F.softmax(logits_t / temperature - 1000.0 * gt, dim=1)
    log_p_s_non = F.log_softmax(logits_s / temperature - 1000.0 * gt, dim=1)
    nckd = F.kl_div(log_p_s_non, p_t_non, reduction="none")
    return tckd, nckd


def _batch_size_of(target: Tensor, name: str) -> int:
    if target.dim() == 0:
        raise ValueError(f"{name}: target must have at least one dimension (batch), got a 0-d tensor")
    return target.shape[0]


def dkd_loss(
    logits_s: Tensor,
    logits_t: Tensor,
    target: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> Tensor:
    """Decoupled KD: ``alpha * TCKD + beta * NCKD`` (mdistiller.md 2.2).

    Args: ``logits_s``, ``logits_t`` B x K; ``target`` int64 labels (flattened, B of them).
    TCKD = KL between the binary (target, rest) probabilities of teacher and student at temperature T;
    NCKD = KL between the softmaxes of ``logits/T - 1000 * onehot(target)``. Both are summed over batch and
    entries, times T**2, divided by ``target.shape[0]``.
    Quirks: the target class is suppressed by subtracting 1000 (it leaks when |logits|/T is near 1000);
    ``log`` of the binary probabilities has no eps (-inf / NaN for saturated logits, as in the official).
    """
    bsz = _batch_size_of(target, "dkd_loss")
    tckd, nckd = _dkd_terms(logits_s, logits_t, target, temperature)
    scale = temperature**2
    return alpha * (tckd.sum() * scale / bsz) + beta * (nckd.sum() * scale / bsz)


# ---------------------------------------------------------------------------------- feature losses
def at_loss(feats_s: Sequence[Tensor], feats_t: Sequence[Tensor], p: float = 2.0) -> Tensor:
    """Attention transfer, summed over stages (mdistiller.md 2.4).

    Per stage (B x C x H x W each; channels may differ): square pooling of the taller map (heights only),
    attention ``a(f) = normalize(mean_c f**p)`` over the H*W vector (``pow(p)``, not ``|f|**p``), stage loss =
    mean over B*H*W of ``(a_s - a_t)**2``. Stages are summed, not averaged.
    """
    total = None
    for f_s, f_t in _stage_pairs(feats_s, feats_t, "at_loss"):
        f_s, f_t = _pool_to_square(f_s, f_t, "at_loss")
        a_s = F.normalize(f_s.pow(p).mean(1).reshape(f_s.shape[0], -1))
        a_t = F.normalize(f_t.pow(p).mean(1).reshape(f_t.shape[0], -1))
        stage = (a_s - a_t).pow(2).mean()
        total = stage if total is None else total + stage
    return total


def _poly2_kernel_mean(a: Tensor, b: Tensor) -> Tensor:
    """Mean over n, j, i of ``<a[n, i], b[n, j]>**2`` (a: B x Ca x L, b: B x Cb x L)."""
    return (a.unsqueeze(1) * b.unsqueeze(2)).sum(-1).pow(2).mean()


def nst_loss(feats_s: Sequence[Tensor], feats_t: Sequence[Tensor]) -> Tensor:
    """Neuron selectivity transfer: squared MMD with a degree-2 polynomial kernel (mdistiller.md 2.5).

    Per stage: square pooling as AT; each channel's H*W vector L2-normalised; loss =
    ``mean K(t,t)`` (detached) ``+ mean K(s,s) - 2 mean K(s,t)`` with K = squared inner products, means over
    all B*C*C entries. Stages are summed.
    """
    total = None
    for f_s, f_t in _stage_pairs(feats_s, feats_t, "nst_loss"):
        f_s, f_t = _pool_to_square(f_s, f_t, "nst_loss")
        f_s = F.normalize(f_s.reshape(f_s.shape[0], f_s.shape[1], -1), dim=2)
        f_t = F.normalize(f_t.reshape(f_t.shape[0], f_t.shape[1], -1), dim=2)
        stage = (
            _poly2_kernel_mean(f_t, f_t).detach()
            + _poly2_kernel_mean(f_s, f_s)
            - 2 * _poly2_kernel_mean(f_s, f_t)
        )
        total = stage if total is None else total + stage
    return total


def sp_loss(feats_s: Sequence[Tensor], feats_t: Sequence[Tensor]) -> Tensor:
    """Similarity-preserving KD, summed over stages (mdistiller.md 2.6).

    Per stage: flatten to B x D (D may differ), Gram matrix ``G = f f^T`` row-normalised, stage loss =
    ``sum (G_t - G_s)**2 / B**2``. Quirk: the official returns a shape-(1,) tensor; this returns the same
    value as a 0-d tensor. Student and teacher batch sizes must match.
    """
    total = None
    for f_s, f_t in _stage_pairs(feats_s, feats_t, "sp_loss"):
        bsz = f_s.shape[0]
        if f_t.shape[0] != bsz:
            raise ValueError(f"sp_loss: batch sizes differ ({bsz} vs {f_t.shape[0]})")
        f_s, f_t = f_s.reshape(bsz, -1), f_t.reshape(bsz, -1)
        g_s = F.normalize(f_s @ f_s.t())
        g_t = F.normalize(f_t @ f_t.t())
        stage = (g_t - g_s).pow(2).sum() / (bsz * bsz)
        total = stage if total is None else total + stage
    return total


def _svd_top(feat: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """KDSVD factorisation of a B x C x H x W map viewed as B x (C*H) x W (float32).

    Returns the first n normalised singular values (B x n) and right singular vectors (B x W x n), each
    normalised along dim 1, with non-finite entries zeroed before the truncation.
    """
    if feat.dim() != 4:
        raise ValueError(f"kdsvd_loss: features must be 4-D (B x C x H x W), got shape {tuple(feat.shape)}")
    b, c, h, w = feat.shape
    x = feat.reshape(b, c * h, w).float()
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    v = vh.transpose(-2, -1)
    s = torch.where(torch.isfinite(s), s, torch.zeros_like(s))
    v = torch.where(torch.isfinite(v), v, torch.zeros_like(v))
    return F.normalize(s[:, :n], dim=1), F.normalize(v[:, :, :n], dim=1)


def _align_to_teacher(v_s: Tensor, v_t: Tensor) -> Tensor:
    """For each teacher vector pick the student vector of largest |cosine|, with its sign (ties add up)."""
    cos = v_s.transpose(-2, -1) @ v_t
    best = cos.abs().max(dim=1, keepdim=True).values
    mask = torch.where(best == cos.abs(), torch.sign(cos), torch.zeros_like(cos))
    return v_s @ mask


def kdsvd_loss(feats_s: Sequence[Tensor], feats_t: Sequence[Tensor], k: int = 1) -> Tensor:
    """Self-supervised KD with SVD (mdistiller.md 2.7).

    Per stage (4-D maps): ``x = f.reshape(B, C*H, W).float()`` (quirk: rows mix channel and height), thin
    SVD; teacher keeps k, student k+3 right singular vectors, the student's are aligned to the teacher's
    (largest |cos| with sign), both scaled by the teacher's normalised singular values. From stage 1 on,
    RBF maps ``exp(-(v_i[:, :, None] - v_prev[:, None])**2 / 8)`` (B x W_i x W_prev x k) of consecutive
    stages are compared: ``sum (rbf_s - rbf_t.detach())**2`` with non-finite entries zeroed. Result =
    sum over stage pairs / B (batch of ``feats_s[0]``), float32.
    Quirks: stage 0 only serves as "previous"; with a single stage the official returns the int 0 (here a
    0-d float32 zero on the input device). Signs follow LAPACK's SVD convention (``torch.linalg.svd``,
    same as the official ``torch.svd``).
    """
    pairs = _stage_pairs(feats_s, feats_t, "kdsvd_loss")
    bsz = feats_s[0].shape[0]
    total = None
    prev_s = prev_t = None
    for i, (f_s, f_t) in enumerate(pairs):
        s_t, v_t = _svd_top(f_t, k)
        _, v_s = _svd_top(f_s, k + 3)
        v_s = _align_to_teacher(v_s, v_t)
        scale = s_t.unsqueeze(1)
        v_t, v_s = v_t * scale, v_s * scale
        if i > 0:
            rbf_s = torch.exp(-(v_s.unsqueeze(2) - prev_s.unsqueeze(1)).pow(2) / 8)
            rbf_t = torch.exp(-(v_t.unsqueeze(2) - prev_t.unsqueeze(1)).pow(2) / 8)
            sq = (rbf_s - rbf_t.detach()).pow(2)
            term = torch.where(torch.isfinite(sq), sq, torch.zeros_like(sq)).sum() / bsz
            total = term if total is None else total + term
        prev_s, prev_t = v_s, v_t
    if total is None:
        return torch.zeros((), dtype=torch.float32, device=feats_s[0].device)
    return total


def ofd_loss(feat_s: Tensor, feat_t: Tensor, margin: Tensor) -> Tensor:
    """Overhaul feature distillation, partial L2 with a per-channel margin (mdistiller.md 2.8).

    Args: ``feat_s`` connector output B x C x H x W; ``feat_t`` teacher pre-ReLU feature (any spatial size:
    adaptive-average-pooled to the student's H x W and detached, as the official module does); ``margin``
    1 x C x 1 x 1 or a (C,) vector (cast to ``feat_s``'s dtype and device).
    Elementwise ``l = (s-m)**2 [s>m, t<=m] + (s-t)**2 [s>t, m<t<=0] + (s-t)**2 [t>0]``; returns the batch
    mean of |l| summed over C, H, W (no normalisation by C*H*W). The per-stage 1/2**(n-1-i) weights of the
    OFD module are not applied here.
    """
    feat_t = F.adaptive_avg_pool2d(feat_t, feat_s.shape[-2:]).detach()
    m = torch.as_tensor(margin).to(feat_s)
    if m.dim() == 1:  # per-channel vector (C,) -> 1 x C x 1 x 1
        m = m.reshape(1, -1, 1, 1)
    below = ((feat_s > m) & (feat_t <= m)).to(feat_s.dtype)
    between = ((feat_s > feat_t) & (feat_t > m) & (feat_t <= 0)).to(feat_s.dtype)
    positive = (feat_t > 0).to(feat_s.dtype)
    ell = (feat_s - m) ** 2 * below + (feat_s - feat_t) ** 2 * between + (feat_s - feat_t) ** 2 * positive
    return ell.abs().mean(dim=0).sum()


def vid_loss(mean_s: Tensor, log_scale: Tensor, feat_t: Tensor, eps: float = 1e-5) -> Tensor:
    """Variational information distillation: Gaussian negative log-likelihood (mdistiller.md 2.9).

    Args: ``mean_s`` regressor output mu (B x C x H x W); ``log_scale`` per-channel (C,);
    ``feat_t`` teacher feature (B x C x H' x W'). The taller of mu / feat_t is square-pooled to the smaller
    height (AT's matching; the official pools the raw student feature before its regressor, which is the same
    when the regressor sees an already matched map). ``var = log(1 + exp(log_scale)) + eps`` (literal formula,
    not ``softplus``: overflows for log_scale > ~88 like the official), reshaped 1 x C x 1 x 1 and cast to mu.
    Returns ``mean(0.5 * ((mu - t)**2 / var + log(var)))`` over all B*C*H*W (can be negative).
    """
    mean_s, feat_t = _pool_to_square(mean_s, feat_t, "vid_loss")
    var = torch.log(1.0 + torch.exp(log_scale)) + eps
    var = var.view(1, -1, 1, 1).to(mean_s)
    return torch.mean(0.5 * ((mean_s - feat_t) ** 2 / var + torch.log(var)))


def hcl_loss(feats_s: Sequence[Tensor], feats_t: Sequence[Tensor]) -> Tensor:
    """ReviewKD hierarchical context loss, summed over levels (mdistiller.md 2.10).

    Per level (B x C x h x w, equal shapes): mse of the maps plus, for each l in (4, 2, 1) with l < h, the mse
    of the maps adaptive-average-pooled to l x l; the weights halve per pool actually used (1, 1/2, 1/4, 1/8)
    and the level loss is the weighted sum divided by the sum of weights.
    """
    total = None
    for f_s, f_t in _stage_pairs(feats_s, feats_t, "hcl_loss"):
        h = f_s.shape[2]
        level = F.mse_loss(f_s, f_t)
        weight, weight_sum = 1.0, 1.0
        for size in (4, 2, 1):
            if size >= h:
                continue
            weight /= 2.0
            pooled = F.mse_loss(F.adaptive_avg_pool2d(f_s, (size, size)), F.adaptive_avg_pool2d(f_t, (size, size)))
            level = level + pooled * weight
            weight_sum += weight
        level = level / weight_sum
        total = level if total is None else total + level
    return total
