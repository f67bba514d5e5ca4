"""CRD (contrastive representation distillation) memory-bank math of mdistiller (mdistiller.md section 3, CRD).

Not part of the API.md contract: the CRD distiller keeps two banks (student bank ``memory_s`` and teacher bank
``memory_t``, N x d, one row per training image), the normalisation constants ``Z`` fixed on the first
batch, and the embedding heads; these pure functions compute what the official ``ContrastMemory`` /
``ContrastLoss`` modules do. One training step, as in the official code::

    scores_s = crd_scores(memory_t, emb_s, contrast_idx, T)   # student embedding vs teacher bank
    scores_t = crd_scores(memory_s, emb_t, contrast_idx, T)   # teacher embedding vs student bank
    z_s = z_s if z_s is not None else crd_normalizer(scores_s, N)   # first call only, then kept
    z_t = z_t if z_t is not None else crd_normalizer(scores_t, N)
    loss = crd_contrast_loss(scores_s / z_s, N) + crd_contrast_loss(scores_t / z_t, N)
    memory_s = crd_memory_update(memory_s, emb_s, index, momentum)   # after the scores
    memory_t = crd_memory_update(memory_t, emb_t, index, momentum)

:func:`crd_loss` bundles the first four lines. ``contrast_idx`` is B x (K+1) with column 0 the positive
(the sample's own index in the official "exact" mode) and K negatives.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["crd_scores", "crd_normalizer", "crd_contrast_loss", "crd_memory_update", "crd_loss"]


def crd_scores(memory: Tensor, emb: Tensor, contrast_idx: Tensor, temperature: float = 0.07) -> Tensor:
    """Unnormalised scores ``exp(<memory[idx_bj], emb_b> / T)``, B x (K+1) (official: B x (K+1) x 1).

    ``memory`` N x d (rows detached: no gradient to the bank), ``emb`` B x d, ``contrast_idx`` B x (K+1) int64.
    """
    if contrast_idx.dim() != 2 or contrast_idx.shape[0] != emb.shape[0]:
        raise ValueError(f"crd_scores: contrast_idx must be B x (K+1) with B = {emb.shape[0]}, "
                         f"got shape {tuple(contrast_idx.shape)}")
    rows = memory.detach()[contrast_idx]  # B x (K+1) x d
    return torch.exp(torch.bmm(rows, emb.unsqueeze(2)).squeeze(2) / temperature)


def crd_normalizer(scores: Tensor, num_data: int) -> Tensor:
    """Normalisation constant ``Z = mean(scores) * N`` (detached 0-d, in ``scores``' dtype).

    The official module computes it on the very first batch only and keeps it for the whole training.
    """
    return (scores.detach().mean() * num_data).reshape(())


def crd_contrast_loss(scores: Tensor, num_data: int, eps: float = 1e-7) -> Tensor:
    """NCE loss of normalised scores x (B x (K+1), column 0 positive; a trailing singleton dim is accepted).

    With m = K and noise probability P_n = 1/N: ``-[sum_b log(x_b0 / (x_b0 + m P_n + eps))
    + sum_{b, k>=1} log(m P_n / (x_bk + m P_n + eps))] / B``. Official returns shape (1,); here 0-d.
    """
    x = scores.reshape(scores.shape[0], -1) if scores.dim() == 3 else scores
    if x.dim() != 2 or x.shape[1] < 2:
        raise ValueError(f"crd_contrast_loss: scores must be B x (K+1) with K >= 1, got shape {tuple(scores.shape)}")
    bsz, m = x.shape[0], x.shape[1] - 1
    noise = m / float(num_data)
    pos, neg = x[:, 0], x[:, 1:]
    log_d1 = torch.log(pos / (pos + (noise + eps)))
    log_d0 = torch.log(torch.full_like(neg, noise) / (neg + (noise + eps)))
    return -(log_d1.sum() + log_d0.sum()) / bsz


def crd_memory_update(memory: Tensor, emb: Tensor, index: Tensor, momentum: float = 0.5) -> Tensor:
    """New bank with rows ``index`` replaced by ``normalize(momentum * row + (1 - momentum) * emb)``.

    The L2 normalisation has no eps (as the official). Out of place, no gradient. With repeated indices
    the row written last wins, as with ``index_copy``.
    """
    with torch.no_grad():
        rows = memory[index] * momentum + emb.detach() * (1 - momentum)
        rows = rows / rows.pow(2).sum(1, keepdim=True).pow(0.5)
        return memory.detach().index_copy(0, index, rows)


def crd_loss(
    emb_s: Tensor,
    emb_t: Tensor,
    memory_s: Tensor,
    memory_t: Tensor,
    contrast_idx: Tensor,
    num_data: int,
    z_s: Tensor | float,
    z_t: Tensor | float,
    temperature: float = 0.07,
    eps: float = 1e-7,
) -> Tensor:
    """CRD loss ``L_s + L_t`` (unweighted; official weight 0.8 applied by the module).

    ``emb_s``, ``emb_t``: B x d L2-normalised embeddings (both receive gradients); ``memory_s``/``memory_t``:
    student/teacher banks before this step's update; ``z_s``/``z_t``: the fixed constants from
    :func:`crd_normalizer` (computed from this batch's scores on the first step). L_s contrasts the student
    embedding with the teacher bank, L_t the teacher embedding with the student bank.
    """
    scores_s = crd_scores(memory_t, emb_s, contrast_idx, temperature) / z_s
    scores_t = crd_scores(memory_s, emb_t, contrast_idx, temperature) / z_t
    return crd_contrast_loss(scores_s, num_data, eps) + crd_contrast_loss(scores_t, num_data, eps)
