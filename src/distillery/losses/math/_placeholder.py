# Temporary spine implementations; replaced by math/d3still.py and math/mdistiller.py on merge.
import torch
import torch.nn.functional as F


def kd_loss(logits_s, logits_t, temperature=2.0):
    log_p_s = F.log_softmax(logits_s / temperature, dim=1)
    p_t = F.softmax(logits_t / temperature, dim=1)
    return F.kl_div(log_p_s, p_t, reduction="none").sum(1).mean() * temperature ** 2


def fitnet_loss(feat_s, feat_t):
    return F.mse_loss(feat_s, feat_t)


def _pdist(e, squared, eps):
    prod = e @ e.t()
    sq = prod.diag()
    res = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * prod).clamp(min=eps)
    if not squared:
        res = res.sqrt()
    res = res.clone()
    res[range(len(e)), range(len(e))] = 0
    return res


def rkd_loss(emb_s, emb_t, squared=False, eps=1e-12, distance_weight=25.0, angle_weight=50.0):
    s = emb_s.view(emb_s.shape[0], -1)
    t = emb_t.view(emb_t.shape[0], -1)
    with torch.no_grad():
        t_d = _pdist(t, squared, eps)
        t_d = t_d / t_d[t_d > 0].mean()
    d = _pdist(s, squared, eps)
    d = d / d[d > 0].mean()
    loss_d = F.smooth_l1_loss(d, t_d)
    with torch.no_grad():
        td = t.unsqueeze(0) - t.unsqueeze(1)
        norm_td = F.normalize(td, p=2, dim=2)
        t_angle = torch.bmm(norm_td, norm_td.transpose(1, 2)).view(-1)
    sd = s.unsqueeze(0) - s.unsqueeze(1)
    norm_sd = F.normalize(sd, p=2, dim=2)
    s_angle = torch.bmm(norm_sd, norm_sd.transpose(1, 2)).view(-1)
    loss_a = F.smooth_l1_loss(s_angle, t_angle)
    return distance_weight * loss_d + angle_weight * loss_a


def pkt_loss(emb_s, emb_t, eps=1e-7):
    s = emb_s / (emb_s.norm(dim=1, keepdim=True) + eps)
    s = torch.nan_to_num(s, nan=0.0)
    t = emb_t / (emb_t.norm(dim=1, keepdim=True) + eps)
    t = torch.nan_to_num(t, nan=0.0)
    S = (s @ s.t() + 1.0) / 2.0
    T = (t @ t.t() + 1.0) / 2.0
    S = S / S.sum(dim=1, keepdim=True)
    T = T / T.sum(dim=1, keepdim=True)
    return torch.mean(T * torch.log((T + eps) / (S + eps)))


def triplet_loss(emb, labels, margin=0.3, mining="batch_hard", normalize=False):
    if normalize:
        emb = F.normalize(emb, dim=1)
    emb = emb.float()
    sq = (emb * emb).sum(1)
    dist = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * emb @ emb.t()).clamp(min=1e-12).sqrt()
    pos = labels.unsqueeze(0) == labels.unsqueeze(1)
    d_ap = dist.masked_fill(~pos, float("-inf")).max(1).values
    d_an = dist.masked_fill(pos, float("inf")).min(1).values
    if margin is None:
        return F.softplus(d_ap - d_an).mean()
    return F.relu(d_ap - d_an + margin).mean()
