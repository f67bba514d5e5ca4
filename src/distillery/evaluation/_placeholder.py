# Temporary naive metrics for the spine; replaced by evaluation/retrieval.py on merge.
import numpy as np
import torch
import torch.nn.functional as F


def retrieval_metrics(query_emb, query_labels, gallery_emb, gallery_labels, *, exclude_self, ks=(1, 5, 10),
                      query_cams=None, gallery_cams=None):
    q = F.normalize(torch.as_tensor(np.asarray(query_emb), dtype=torch.float32), dim=1)
    g = F.normalize(torch.as_tensor(np.asarray(gallery_emb), dtype=torch.float32), dim=1)
    ql, gl = np.asarray(query_labels), np.asarray(gallery_labels)
    aps, hits = [], {k: [] for k in ks}
    for i in range(len(q)):
        s = (g @ q[i]).numpy()
        order = np.argsort(-s, kind="stable")
        if exclude_self:
            order = order[order != i]
        m = gl[order] == ql[i]
        if not m.any():
            continue
        c = np.cumsum(m)
        aps.append((c[m] / (np.flatnonzero(m) + 1)).mean())
        for k in ks:
            hits[k].append(m[:k].any())
    out = {"map": 100 * float(np.mean(aps))}
    out.update({f"recall_at_{k}": 100 * float(np.mean(v)) for k, v in hits.items()})
    return out


def classification_metrics(logits, labels, ks=(1, 5)):
    logits = torch.as_tensor(np.asarray(logits)); labels = torch.as_tensor(np.asarray(labels))
    top = logits.topk(max(ks), 1).indices
    return {f"top{k}": 100 * float((top[:, :k] == labels[:, None]).any(1).float().mean()) for k in ks}
