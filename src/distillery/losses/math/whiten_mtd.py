"""Multi-teacher cross-view similarity distillation of whiten_mtd (spec: whiten_mtd.md sections 2 and 9).

The official training code always runs under DDP and gathers every normalised tensor before
forming the similarity matrices, then multiplies the loss by ``world_size``. The pure function here
is the single-process loss (gather = identity, factor 1); the distiller module does the
gather-with-grad and the world-size factor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

STRATEGIES = ("mean", "maxmin", "maxmean", "maxfix")


def _diag_mask(sims: torch.Tensor) -> torch.Tensor:
    """Boolean ``B1 x B2`` mask that is true on ``i == j`` (``torch.eye(n, m)``, so non-square works)."""
    return torch.eye(sims.size(1), m=sims.size(2), dtype=torch.bool, device=sims.device)


def fuse_teacher_similarities(sims: torch.Tensor, strategy: str) -> torch.Tensor:
    """Fuse ``K x B1 x B2`` teacher similarity matrices into one ``B1 x B2`` matrix.

    - ``mean``: mean over teachers everywhere.
    - ``maxmin``: diagonal (positive pairs) = max over teachers, off-diagonal = min over teachers.
    - ``maxmean``: diagonal = max over teachers, off-diagonal = mean over teachers.
    - ``maxfix``: diagonal = max over teachers, off-diagonal = the last teacher. Extension: the
      official class defines it but its dispatcher never calls it.

    The diagonal/off-diagonal combination is arithmetic (``a * mask + b * ~mask``) as in the
    official code, not a ``where`` (identical for finite values). The random strategies of the
    official code (``rand``, ``maxrand``) are not provided: a pure function holds no randomness.
    """
    if strategy == "mean":
        return sims.mean(dim=0)
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid strategies: {', '.join(STRATEGIES)}")
    diag = sims.max(dim=0)[0]
    if strategy == "maxmin":
        off = sims.min(dim=0)[0]
    elif strategy == "maxmean":
        off = sims.mean(dim=0)
    else:  # maxfix
        off = sims[-1]
    mask = _diag_mask(sims)
    return diag * mask + off * mask.logical_not()


def _row_kl(stu_sim: torch.Tensor, tch_sim: torch.Tensor, temp_student: float, temp_teacher: float) -> torch.Tensor:
    """KL(softmax(tch/τt) ‖ softmax(stu/τs)) per row, summed and divided by the number of rows."""
    target = F.softmax(tch_sim.div(temp_teacher), dim=-1)
    log_input = F.log_softmax(stu_sim.div(temp_student), dim=-1)
    return F.kl_div(log_input, target, reduction="batchmean")


def whitened_similarity_loss(
    emb_s: torch.Tensor,
    embs_t: Sequence[torch.Tensor],
    strategy: str = "maxmin",
    temp_student: float = 0.05,
    temp_teacher: float = 0.05,
    emb_s2: torch.Tensor | None = None,
    embs_t2: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Cross-view similarity KL between a student and K fused (PCA-whitened) teachers.

    Shapes: ``emb_s`` B1 x Ds, ``emb_s2`` B2 x Ds, ``embs_t[k]`` B1 x Dk, ``embs_t2[k]`` B2 x Dk
    (Dk may differ per teacher and from Ds). ``emb_s2`` / ``embs_t2`` = None means "same tensor as
    the first view"; each is resolved on its own.

    Computation: every input is L2-normalised (``F.normalize``, eps 1e-12); S = s1 s2ᵀ and
    T_k = t1_k t2_kᵀ (B1 x B2); F = fuse(T_1..T_K) (see :func:`fuse_teacher_similarities`);
    KL₁ = KL(softmax(F/τt) ‖ softmax(S/τs)) over rows with ``batchmean`` (divided by B1),
    KL₂ = the same for Sᵀ and Fᵀ (each column softmaxed over view-1 samples, divided by B2);
    returns KL₁ + KL₂ as a 0-d tensor.

    Quirks kept from the official code: the temperature divides the logits with no T² factor; the
    two directions are summed (no ½); self/diagonal entries are kept; nothing is detached inside
    (teachers are produced under no_grad by the caller). Not included: the official ×world_size
    and all-gather (single process = identity, done by the distiller under DDP), and the
    ``pos_win_count`` logging buffer. An unknown strategy raises ``ValueError`` (the official
    code fails with UnboundLocalError).
    """
    if len(embs_t) == 0:
        raise ValueError("embs_t must hold at least one teacher embedding")
    if embs_t2 is not None and len(embs_t2) != len(embs_t):
        raise ValueError(f"embs_t2 has {len(embs_t2)} teachers but embs_t has {len(embs_t)}")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid strategies: {', '.join(STRATEGIES)}")
    emb_s2 = emb_s if emb_s2 is None else emb_s2
    embs_t2 = embs_t if embs_t2 is None else embs_t2

    s1, s2 = F.normalize(emb_s, p=2, dim=-1), F.normalize(emb_s2, p=2, dim=-1)
    stu_sim = s1.mm(s2.t())
    tch_sims = torch.stack(
        [F.normalize(t1, p=2, dim=-1).mm(F.normalize(t2, p=2, dim=-1).t()) for t1, t2 in zip(embs_t, embs_t2)]
    )
    fused = fuse_teacher_similarities(tch_sims, strategy)
    return _row_kl(stu_sim, fused, temp_student, temp_teacher) + _row_kl(
        stu_sim.t(), fused.t(), temp_student, temp_teacher
    )
