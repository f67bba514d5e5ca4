"""Embedding losses of the D3still / AIR-Distiller codebase (spec: d3still.md section 2).

Pure functions: tensors in, an unweighted 0-d tensor out, on the inputs' device. Shared conventions:

* ``n(x)`` is row-wise L2 normalisation ``x / max(||x||, 1e-12)`` (``F.normalize``), in the input dtype.
* CSD, ROP and D3still normalise in the input dtype, **then** cast to float64, and return a float64 scalar.
* The teacher input is not detached unless a docstring says so (the official teacher is frozen, so only
  gradients w.r.t. ``emb_s`` are meaningful).
* FitNet, RKD and PKT also exist in mdistiller (mdistiller.md 2.3, 2.11, 2.12): the loss functions of the two
  codebases are identical line for line (they differ only in which features the modules feed them), so no
  switch between the two is needed; one implementation serves both.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "fitnet_loss",
    "rkd_loss",
    "pkt_loss",
    "cc_loss",
    "csd_loss",
    "raml_loss",
    "rop_loss",
    "d3still_loss",
    "ugd_loss",
    "triplet_loss",
]

_TRIPLET_MINING = ("batch_hard", "batch_soft")


def _check_pair(emb_s: Tensor, emb_t: Tensor, *, min_batch: int = 1, same_dim: bool = True) -> int:
    """Validate two B x D embedding batches and return B."""
    if emb_s.dim() != 2 or emb_t.dim() != 2:
        raise ValueError(f"expected B x D embeddings, got shapes {tuple(emb_s.shape)} and {tuple(emb_t.shape)}")
    if emb_s.shape[0] != emb_t.shape[0] or (same_dim and emb_s.shape[1] != emb_t.shape[1]):
        raise ValueError(f"student/teacher shapes differ: {tuple(emb_s.shape)} vs {tuple(emb_t.shape)}")
    if emb_s.shape[0] < min_batch:
        raise ValueError(f"this loss needs a batch of at least {min_batch}, got {emb_s.shape[0]}")
    return emb_s.shape[0]


def _ranked_similarities(emb_s: Tensor, emb_t: Tensor) -> tuple[Tensor, Tensor]:
    """Teacher-ranked similarities (float64): ``(s_sorted, t_sorted)``, both B x B.

    ``t_sorted`` is every row of ``n(t) n(t)^T`` sorted descending (``torch.sort``, not stable) and
    ``s_sorted`` the cross similarities ``n(s) n(t)^T`` gathered at the same gallery indices.
    """
    s = F.normalize(emb_s, p=2, dim=1).double()
    t = F.normalize(emb_t, p=2, dim=1).double()
    t_sorted, order = torch.sort(t @ t.t(), dim=1, descending=True)
    return torch.gather(s @ t.t(), 1, order), t_sorted


def fitnet_loss(feat_s: Tensor, feat_t: Tensor) -> Tensor:
    """FitNet hint loss: mean over all elements of ``(feat_s - feat_t)^2`` (any equal shapes).

    ``feat_s`` has already been through the connector (D3still: none, it distils the 512-d retrieval
    embeddings directly; mdistiller: the ConvReg output against a hint-layer map). Same math in both codes.
    """
    if feat_s.shape != feat_t.shape:
        raise ValueError(f"feature shapes differ: {tuple(feat_s.shape)} vs {tuple(feat_t.shape)}")
    return F.mse_loss(feat_s, feat_t)


def _pairwise_distances(e: Tensor, squared: bool, eps: float) -> Tensor:
    """B x B distances from ``|e_i|^2 + |e_j|^2 - 2 e_i.e_j`` clamped at ``eps``; diagonal set to 0 last."""
    sq = e.pow(2).sum(dim=1)
    dist = (sq[:, None] + sq[None, :] - 2 * (e @ e.t())).clamp(min=eps)
    if not squared:
        dist = dist.sqrt()
    eye = torch.eye(len(e), dtype=torch.bool, device=e.device)
    return dist.masked_fill(eye, 0.0)


def _mean_scaled_distances(e: Tensor, squared: bool, eps: float) -> Tensor:
    dist = _pairwise_distances(e, squared, eps)
    return dist / dist[dist > 0].mean()


def _triplet_angles(e: Tensor) -> Tensor:
    """Flattened B^3 cosines ``<n(e_j - e_i), n(e_k - e_i)>`` (zero vectors stay 0)."""
    directions = F.normalize(e[None, :, :] - e[:, None, :], p=2, dim=2)
    return (directions @ directions.transpose(1, 2)).flatten()


def rkd_loss(
    emb_s: Tensor,
    emb_t: Tensor,
    squared: bool = False,
    eps: float = 1e-12,
    distance_weight: float = 25.0,
    angle_weight: float = 50.0,
) -> Tensor:
    """Relational KD: ``distance_weight * L_dist + angle_weight * L_angle`` (both codebases, same code).

    Inputs B x ... are flattened to B x D. Distances are divided by the mean of their strictly positive
    entries (the off-diagonal ones: the clamp keeps them >= sqrt(eps)); ``L_dist`` is smooth-L1 (beta 1)
    averaged over all B^2 entries (zero diagonal included), ``L_angle`` smooth-L1 over all B^3 angle
    cosines. The teacher side is computed without gradient, as in the official code. Quirk: two identical
    student rows give a zero difference vector whose normalisation has a ~1/1e-12 gradient (official too).
    Raises ValueError for B < 2 (the official code returns NaN there).
    """
    stu = emb_s.reshape(emb_s.shape[0], -1)
    tea = emb_t.reshape(emb_t.shape[0], -1).detach()
    _check_pair(stu, tea, min_batch=2, same_dim=False)
    loss_d = F.smooth_l1_loss(_mean_scaled_distances(stu, squared, eps), _mean_scaled_distances(tea, squared, eps))
    loss_a = F.smooth_l1_loss(_triplet_angles(stu), _triplet_angles(tea))
    return distance_weight * loss_d + angle_weight * loss_a


def _pkt_probabilities(x: Tensor, eps: float) -> Tensor:
    """Row-stochastic B x B matrix of ``(cos + 1) / 2``; rows scaled by ``1 / (||x|| + eps)``, NaN -> 0."""
    x = x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)
    x = torch.where(torch.isnan(x), torch.zeros_like(x), x)
    sim = (x @ x.t() + 1.0) / 2.0
    return sim / sim.sum(dim=1, keepdim=True)


def pkt_loss(emb_s: Tensor, emb_t: Tensor, eps: float = 1e-7) -> Tensor:
    """Probabilistic KT: ``mean_{i,j} P_t log((P_t + eps) / (P_s + eps))`` over all B^2 entries.

    Quirks (both codebases, same code): eps is added to the norm (not a max), the mean runs over all B^2
    entries (the KL of each row divided by B, diagonal included), and nothing is detached.
    """
    _check_pair(emb_s, emb_t, same_dim=False)
    p_s, p_t = _pkt_probabilities(emb_s, eps), _pkt_probabilities(emb_t, eps)
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


def cc_loss(emb_s: Tensor, emb_t: Tensor, normalize: bool = True) -> Tensor:
    """Correlation congruence as coded by D3still: ``mean_{b<B-1} sum_d delta_b,d * delta_b+1,d``.

    ``delta = |n(s) - n(t)|`` (or ``|s - t|`` if not ``normalize``), B x D. Quirk: this is the RepDistiller
    product of consecutive samples' residuals, so it depends on the batch order, not the paper's kernel
    correlation. Raises ValueError for B < 2 (the official code returns NaN, the mean of nothing).
    """
    _check_pair(emb_s, emb_t, min_batch=2)
    if normalize:
        emb_s, emb_t = F.normalize(emb_s, p=2, dim=1), F.normalize(emb_t, p=2, dim=1)
    delta = (emb_s - emb_t).abs()
    return (delta[:-1] * delta[1:]).sum(dim=1).mean()


def csd_loss(
    emb_s: Tensor,
    emb_t: Tensor,
    top_k: int = 256,
    temp_student: float = 1.0,
    temp_teacher: float = 0.01,
) -> Tensor:
    """Contextual similarity distillation (f64): batch-mean KL over each row's teacher top-k gallery.

    For every row the k = min(top_k, B) most teacher-similar in-batch items (self included) are taken;
    ``KL(softmax(t_k / temp_teacher) || softmax(s_k / temp_student))`` summed over rows, divided by B; the
    teacher distribution is detached and its zero entries count 0 (``kl_div``). Quirk: the gallery is the
    in-batch teacher embeddings, not the paper's offline train-set gallery. Raises ValueError if top_k < 1.
    """
    batch = _check_pair(emb_s, emb_t)
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    s_sorted, t_sorted = _ranked_similarities(emb_s, emb_t)
    log_q = F.log_softmax(s_sorted[:, :top_k] / temp_student, dim=1)
    p = F.softmax(t_sorted[:, :top_k] / temp_teacher, dim=1).detach()
    return F.kl_div(log_q, p, reduction="sum") / batch


def _offdiag_squared_error(x: Tensor, target: Tensor, eps: float) -> Tensor:
    """``sum_{i != j} (x_ij - target_ij + eps)^2 / (B (B - 1))`` (eps inside the square)."""
    err = (x - target + eps).pow(2)
    eye = torch.eye(err.shape[0], dtype=torch.bool, device=err.device)
    return err.masked_fill(eye, 0.0).sum() / (err.shape[0] * (err.shape[1] - 1))


def raml_loss(emb_s: Tensor, emb_t: Tensor, lambda1: float = 0.7482, lambda2: float = 0.6778) -> Tensor:
    """RAML second-order loss on ``s, t = n(emb_s), n(emb_t)`` (input dtype, eps 1e-6 fixed).

    ``mean_b (1 - s_b.t_b + eps)^2 + lambda1 R(s t^T, t t^T) + lambda2 R(s s^T, t t^T)`` with R the
    off-diagonal squared error above; a falsy (0) lambda skips its term. Defaults are those of the
    official ``SecondOrderLoss``; quirk: the official RAML module passes LAMBDA1 as lambda2, so official
    training uses lambda2 = lambda1 = 0.7482 (the method module reproduces that). The value at s = t is
    about 1e-12 (1 + lambda1 + lambda2), not 0. Raises ValueError for B < 2 when a relational term is on
    (the official code returns NaN).
    """
    eps = 1e-6
    _check_pair(emb_s, emb_t, min_batch=2 if (lambda1 or lambda2) else 1)
    s, t = F.normalize(emb_s, p=2, dim=1), F.normalize(emb_t, p=2, dim=1)
    loss = (1 - (s * t).sum(dim=-1) + eps).pow(2).mean()
    if lambda1 or lambda2:
        t_sim = t @ t.t()
        if lambda1:
            loss = loss + lambda1 * _offdiag_squared_error(s @ t.t(), t_sim, eps)
        if lambda2:
            loss = loss + lambda2 * _offdiag_squared_error(s @ s.t(), t_sim, eps)
    return loss


def rop_loss(
    emb_s: Tensor,
    emb_t: Tensor,
    topk: int = 256,
    temperature: float = 0.1,
    rank_weight: float = 0.2,
) -> Tensor:
    """Rank order preservation (f64) over each row's teacher top-k list (self included).

    With ``t_k``/``s_k`` the teacher-sorted teacher/student similarities (B x k):
    ``I_t[b,i,j] = sigmoid((t_k[b,j] - t_k[b,i]) / 1e-6)``, ``I_s[b,i,j] = sigmoid((s_k[b,j] - t_k[b,i]) /
    temperature)`` (student item j against the *teacher* score of item i, as in the official code),
    ``W[b,i] = softmax_i(rank_weight * t_k[b]) * (i + 1)``;
    loss = ``mean_b sum_{i,j} (I_t - I_s)^2 W[b,i] / k``. Not 0 at s = t.
    Flagged extension: the official code fails for topk > B (shape error) and hard-codes ``.cuda()``;
    here k = min(topk, B) is used everywhere (including the final division), which equals the official
    value for topk = B, and the tensors stay on the inputs' device. Raises ValueError if topk < 1.
    """
    batch = _check_pair(emb_s, emb_t)
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    k = min(topk, batch)
    s_sorted, t_sorted = _ranked_similarities(emb_s, emb_t)
    s_k, t_k = s_sorted[:, :k], t_sorted[:, :k]
    anchor = t_k[:, :, None]
    ind_t = torch.sigmoid((t_k[:, None, :] - anchor) / 1e-6)
    ind_s = torch.sigmoid((s_k[:, None, :] - anchor) / temperature)
    positions = torch.arange(1, k + 1, dtype=t_k.dtype, device=t_k.device)
    weights = F.softmax(t_k * rank_weight, dim=-1) * positions
    return ((ind_t - ind_s).pow(2) * weights[:, :, None]).sum(dim=(1, 2)).mean() / k


def _pairwise_differences(x: Tensor) -> Tensor:
    """B x m -> B x m^2 with entry (i, j) = ``x[b, j] - x[b, i]``."""
    return (x[:, None, :] - x[:, :, None]).reshape(x.shape[0], -1)


def d3still_loss(
    emb_s: Tensor,
    emb_t: Tensor,
    topk: int = 10,
    alpha: float = 100.0,
    beta: float = 5.0,
    gamma: float = 1.0,
) -> Tensor:
    """D3still (f64): feature term + decoupled (hard / simple) differential ranking terms.

    On the teacher-sorted similarities (all B columns, :func:`_ranked_similarities`):
    ``fd = alpha * ||t_sorted[:, 0] - s_sorted[:, 0]||_2 / B`` (norm over the batch, not squared);
    on columns 1..topk-1 (m = min(topk, B) - 1, self normally excluded) the pairwise differences
    ``ds``, ``dt`` (B x m^2) give ``r = ds / dt`` (detached) with exact zeros of ``dt`` replaced by 1 first;
    hard entries have r < 0, simple ones r > 0 (r = 0 in neither); then zeros of ``ds`` -> 1 and
    ``M = (ds - dt) / (0.1 + |dt|)``; ``hard = beta * mean_b ||[r<0] M||_2 / (topk - 1)``, ``simple`` likewise
    with gamma. Quirks kept: the division is by topk - 1 even when B < topk, and off-diagonal teacher ties
    (dt = 0) become dt = 1. Raises ValueError if topk < 2 (official: division by zero, NaN).
    """
    batch = _check_pair(emb_s, emb_t)
    if topk < 2:
        raise ValueError(f"topk must be >= 2 (the ranking term divides by topk - 1), got {topk}")
    s_sorted, t_sorted = _ranked_similarities(emb_s, emb_t)
    fd = alpha * torch.linalg.vector_norm(t_sorted[:, 0] - s_sorted[:, 0]) / batch

    ds = _pairwise_differences(s_sorted[:, 1:topk])
    dt = _pairwise_differences(t_sorted[:, 1:topk])
    dt = torch.where(dt == 0, torch.ones_like(dt), dt)
    ratio = (ds / dt).detach()
    hard, simple = (ratio < 0).to(ds.dtype), (ratio > 0).to(ds.dtype)
    ds = torch.where(ds == 0, torch.ones_like(ds), ds)
    scaled = (ds - dt) / (0.1 + dt.abs())

    hard_term = beta * torch.linalg.vector_norm(hard * scaled, dim=1).mean() / (topk - 1)
    simple_term = gamma * torch.linalg.vector_norm(simple * scaled, dim=1).mean() / (topk - 1)
    return fd + hard_term + simple_term


def _unit_distances(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise ``||n(b) - n(a)||_2``, length B."""
    return torch.linalg.vector_norm(F.normalize(b, p=2, dim=1) - F.normalize(a, p=2, dim=1), dim=1)


def ugd_loss(
    emb_s: Tensor,
    emb_t: Tensor,
    local_feats_s: Sequence[Tensor],
    local_feats_t: Sequence[Tensor],
    local_logits_t: Sequence[Tensor],
    target: Tensor,
    alpha: float = 2.0,
    beta: float = 2.0,
) -> Tensor:
    """Unambiguous granularity distillation: ``alpha * f + beta * sum_g L_g`` (pure part of UGD).

    ``f = mean_b ||n(t_b) - n(s_b)||`` on the B x D global embeddings (``emb_t`` detached). For each
    granularity g, ``local_feats_s[g]``/``local_feats_t[g]`` are (B n_g) x D local features (sample-major),
    ``local_logits_t[g]`` the teacher's (B n_g) x C logits for them, and ``target`` the B labels repeated
    n_g times each; ``L_g`` is the mean of ``||n(t_loc) - n(s_loc)||`` over the rows whose teacher argmax
    equals the label, or 0 when there is none (official: a shape-(1,) ``[0.0]`` created with ``.cuda()``;
    here always a 0-d tensor on the inputs' device). Local teacher features are detached (equivalent to
    the official code, which derives them from a detached map through the frozen teacher head).
    Raises ValueError if the lists differ in length or a row count is not a multiple of B.
    """
    batch = _check_pair(emb_s, emb_t)
    if not len(local_feats_s) == len(local_feats_t) == len(local_logits_t):
        raise ValueError("local_feats_s, local_feats_t and local_logits_t need one entry per granularity")
    if target.shape != (batch,):
        raise ValueError(f"target must hold B = {batch} labels, got shape {tuple(target.shape)}")
    glob = _unit_distances(emb_s, emb_t.detach()).mean()
    local = emb_s.new_zeros(())
    for feat_s, feat_t, logits_t in zip(local_feats_s, local_feats_t, local_logits_t):
        rows = feat_s.shape[0]
        if rows % batch or feat_t.shape[0] != rows or logits_t.shape[0] != rows:
            raise ValueError(f"local rows must be equal and a multiple of B = {batch}: "
                             f"{feat_s.shape[0]}, {feat_t.shape[0]}, {logits_t.shape[0]}")
        correct = logits_t.argmax(dim=1) == target.repeat_interleave(rows // batch)
        if correct.any():
            local = local + _unit_distances(feat_s, feat_t.detach())[correct].mean()
    return alpha * glob + beta * local


def _pairwise_euclidean(x: Tensor) -> Tensor:
    """B x B ``sqrt(clamp(|x_i|^2 + |x_j|^2 - 2 x_i.x_j, 1e-12))`` (the diagonal is 1e-6, not 0)."""
    sq = x.pow(2).sum(dim=1, keepdim=True)
    return torch.addmm(sq + sq.t(), x, x.t(), beta=1, alpha=-2).clamp(min=1e-12).sqrt()


def _soft_mined(dist: Tensor, mask: Tensor, sign: float) -> Tensor:
    """Per-row ``sum softmax(sign * d) d`` over the masked entries (no max subtraction, as official)."""
    d = torch.where(mask, dist, torch.zeros_like(dist))
    w = torch.where(mask, torch.exp(sign * d), torch.zeros_like(d))
    return (w / w.sum(dim=1, keepdim=True) * d).sum(dim=1)


def triplet_loss(
    emb: Tensor,
    labels: Tensor,
    margin: float | None = 0.3,
    mining: str = "batch_hard",
    normalize: bool = False,
) -> Tensor:
    """Batch triplet loss with in-batch mining (D3still ``TripletLoss``), computed in float32.

    Distances as :func:`_pairwise_euclidean` on ``n(emb)`` if ``normalize`` else ``emb``; positives are the
    same-label items **including the anchor itself**, negatives the others. ``batch_hard``: hardest positive
    (max) and negative (min); ``batch_soft``: softmax-weighted positives / softmin-weighted negatives without
    max subtraction (overflow gives NaN, as official). ``margin`` given: ``mean relu(d_ap - d_an + margin)``;
    ``margin=None``: soft margin ``mean log(1 + exp(d_ap - d_an))``. The official trainer pairs
    ``batch_soft`` with ``margin=None``. Masks replace the official reshape, which needs equal class counts
    (P x K batches, where both agree; elsewhere the official code fails or mixes rows). The random
    ``batch_sample`` mining is not supported. Raises ValueError for an unknown mining or an anchor
    without a negative.
    """
    if mining not in _TRIPLET_MINING:
        raise ValueError(f"mining must be one of {_TRIPLET_MINING}, got {mining!r}")
    if emb.dim() != 2 or labels.shape != (emb.shape[0],):
        raise ValueError(f"expected N x D embeddings and N labels, got {tuple(emb.shape)}, {tuple(labels.shape)}")
    if normalize:
        emb = F.normalize(emb, p=2, dim=1)
    dist = _pairwise_euclidean(emb.float())
    same = labels[:, None] == labels[None, :]
    if not (~same).any(dim=1).all():
        raise ValueError("every anchor needs at least one negative (a sample with another label)")
    if mining == "batch_hard":
        d_ap = dist.masked_fill(~same, float("-inf")).max(dim=1).values
        d_an = dist.masked_fill(same, float("inf")).min(dim=1).values
    else:
        d_ap, d_an = _soft_mined(dist, same, 1.0), _soft_mined(dist, ~same, -1.0)
    ones = torch.ones_like(d_an)
    if margin is None:
        return F.soft_margin_loss(d_an - d_ap, ones)
    return F.margin_ranking_loss(d_an, d_ap, ones, margin=margin)
