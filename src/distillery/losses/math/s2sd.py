"""S2SD loss math (spec: s2sd_dml.md sections 2.1, 2.2 and 9).

``similarity_kl_loss`` is the branch/feature distillation term of S2SD; ``multisimilarity_loss`` is
the DML criterion of its CUB/Cars recipes (Wang et al. 2019, as written in the S2SD code base).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def similarity_kl_loss(emb_s: torch.Tensor, emb_t: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Row-wise KL(target ‖ source) between batch cosine-similarity matrices.

    ``emb_s`` B x d_s (source), ``emb_t`` B x d_t (a target branch or the pooled backbone features;
    d_s != d_t allowed). Both are L2-normalised inside (``F.normalize``, eps 1e-12; idempotent on
    normalised inputs). A = ŝŝᵀ, Bt = t̂t̂ᵀ (B x B, diagonal kept); Bt is **detached**, so no
    gradient reaches ``emb_t``. Returns
    ``sum_ij softmax(Bt/T)_ij (log softmax(Bt/T)_ij - log_softmax(A/T)_ij) * T² / B``
    (torch ``kl_div(reduction='sum')`` times T² over the number of rows). 0-d tensor.
    """
    src = F.normalize(emb_s, dim=1)
    tgt = F.normalize(emb_t, dim=-1)
    sim_s = src.mm(src.T)
    sim_t = tgt.mm(tgt.T).detach()
    log_p_s = F.log_softmax(sim_s / temperature, dim=-1)
    p_t = F.softmax(sim_t / temperature, dim=-1)
    return F.kl_div(log_p_s, p_t, reduction="sum") * (temperature**2) / sim_s.shape[0]


def multisimilarity_loss(
    emb: torch.Tensor,
    labels: torch.Tensor,
    pos_weight: float = 2.0,
    neg_weight: float = 40.0,
    margin: float = 0.1,
    thresh: float = 0.5,
) -> torch.Tensor:
    """Multi-similarity loss with the S2SD code base's pair mining.

    ``emb`` B x D is used as given (no normalisation inside; callers pass L2-normalised
    embeddings), ``labels`` 1-D integer tensor of length B. With S = emb embᵀ, for each anchor i:
    positives P_i = {j != i: y_j = y_i} (self removed by index), negatives N_i = {j: y_j != y_i};
    keep negative j if S_ij + margin > min S[i, P_i] and positive j if S_ij - margin <
    max S[i, N_i] (strict; both masks from the unmined sets; masks carry no gradient);
    ``l_i = log(1 + sum_kept+ exp(-α(S_ij - λ)))/α + log(1 + sum_kept- exp(β(S_ij - λ)))/β``
    with α = pos_weight, β = neg_weight, λ = thresh. Returns the plain mean of l_i over the anchors
    that kept at least one positive and one negative (others skipped, not counted). 0-d tensor.

    Quirks: ``log(1 + sum(exp))`` is literal (no log-sum-exp), so large un-normalised dot
    products overflow to inf exactly as in the official code.
    Deviations (only where the official code crashes): an anchor with no positive (class with one
    sample in the batch) or no negative is skipped instead of raising; if no anchor is left the
    result is ``0 * emb.sum()`` (a zero that keeps the graph) instead of an error.
    """
    if emb.dim() != 2 or labels.dim() != 1 or labels.shape[0] != emb.shape[0]:
        raise ValueError(f"expected emb B x D and labels (B,), got {tuple(emb.shape)} and {tuple(labels.shape)}")
    sim = emb.mm(emb.T)
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    eye = torch.eye(len(labels), dtype=torch.bool, device=emb.device)
    pos, neg = same & ~eye, ~same

    with torch.no_grad():
        inf = torch.tensor(float("inf"), dtype=sim.dtype, device=sim.device)
        hardest_pos = torch.where(pos, sim, inf).min(dim=1, keepdim=True)[0]  # +inf if no positive
        hardest_neg = torch.where(neg, sim, -inf).max(dim=1, keepdim=True)[0]  # -inf if no negative
        keep_neg = neg & (sim + margin > hardest_pos)
        keep_pos = pos & (sim - margin < hardest_neg)
        valid = keep_neg.any(dim=1) & keep_pos.any(dim=1)
        keep_neg &= valid.unsqueeze(1)  # skipped anchors get no terms (keeps their gradients exactly 0)
        keep_pos &= valid.unsqueeze(1)
    if not bool(valid.any()):
        return emb.sum() * 0.0

    neg_inf = torch.full_like(sim, float("-inf"))
    pos_exp = torch.exp(torch.where(keep_pos, -pos_weight * (sim - thresh), neg_inf)).sum(dim=1)
    neg_exp = torch.exp(torch.where(keep_neg, neg_weight * (sim - thresh), neg_inf)).sum(dim=1)
    per_anchor = 1.0 / pos_weight * torch.log(1 + pos_exp) + 1.0 / neg_weight * torch.log(1 + neg_exp)
    return per_anchor[valid].mean()
