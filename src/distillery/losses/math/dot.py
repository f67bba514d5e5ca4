"""DOT, the distillation-oriented trainer of mdistiller (ICCV 2023; spec: mdistiller.md section 3, DOT).

SGD with two momentum buffers per parameter: one for the task (cross-entropy) gradient with momentum
``momentum`` (= mu - delta in the official trainer) and one for the distillation gradient with momentum
``momentum_kd`` (= mu + delta). Usage per iteration, as in the official ``DOT`` trainer::

    opt.zero_grad(set_to_none=True)
    loss_kd.backward(retain_graph=True)
    opt.step_kd()                    # records (copies of) the KD gradients
    opt.zero_grad(set_to_none=True)
    loss_ce.backward()
    opt.step()                       # task update, then KD update

Update rule of :meth:`DistillationOrientedSGD.step` for each parameter (lr, weight decay wd, dampening d):

* task branch (parameters with a gradient now): ``g = grad + wd * theta``; if ``momentum != 0``: first step
  ``buf = g`` (no dampening), else ``buf = mom * buf + (1 - d) * g`` where ``mom = momentum`` if the
  parameter also got a KD gradient and ``(momentum + momentum_kd) / 2`` otherwise; ``theta -= lr * buf``;
* KD branch (parameters recorded by :meth:`step_kd`): first step ``buf_kd = g_kd`` (no weight decay, even for
  a KD-only parameter); else if the parameter also had a task gradient ``buf_kd = momentum_kd * buf_kd +
  (1 - d) * g_kd`` (no weight decay), otherwise ``buf_kd = (momentum + momentum_kd) / 2 * buf_kd + (1 - d) *
  (g_kd + wd * theta)``; ``theta -= lr * buf_kd``.

Shared parameters therefore move twice per iteration and get weight decay only through the task branch.
State keys ``momentum_buffer`` and ``momentum_kd_buffer`` are the official ones (checkpoints interchange).
Differences from the official class (none changes the numbers of the official usage): the KD gradients are
copied in :meth:`step_kd` (the official keeps references, which is only correct with
``zero_grad(set_to_none=True)``), and several parameter groups are allowed (the official asserts one).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["DistillationOrientedSGD", "dot_momenta"]


def dot_momenta(momentum: float = 0.9, delta: float = 0.075) -> tuple[float, float]:
    """Official trainer's momenta: ``(momentum - delta, momentum + delta)`` for the task and KD buffers."""
    return momentum - delta, momentum + delta


class DistillationOrientedSGD(Optimizer):
    """SGD with separate task / distillation momentum buffers (official ``DistillationOrientedTrainer``).

    Args: ``params``; ``lr``; ``momentum`` (task buffer, official CIFAR 0.825, ImageNet 0.81);
    ``momentum_kd`` (KD buffer, 0.975 / 0.99); ``dampening``; ``weight_decay``. See the module docstring for
    the update rule and the call protocol (:meth:`step_kd` after the KD backward, :meth:`step` after the task
    backward).
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, momentum_kd: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0):
        for name, value in (("learning rate", lr), ("momentum", momentum), ("momentum_kd", momentum_kd),
                            ("weight_decay", weight_decay)):
            if value < 0.0:
                raise ValueError(f"Invalid {name}: {value}")
        defaults = dict(lr=lr, momentum=momentum, momentum_kd=momentum_kd, dampening=dampening,
                        weight_decay=weight_decay)
        super().__init__(params, defaults)
        self._kd_grads: dict[int, Tensor] = {}  # id(param) -> copied KD gradient

    @torch.no_grad()
    def step_kd(self, closure=None):
        """Record a copy of every current gradient as the KD gradient of its parameter; no update."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._kd_grads = {
            id(p): p.grad.detach().clone() for group in self.param_groups for p in group["params"] if p.grad is not None
        }
        return loss

    @torch.no_grad()
    def step(self, closure=None):
        """Task update from the current gradients, then KD update from the recorded ones; clears the record."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._update_group(group)
        self._kd_grads = {}
        return loss

    def _update_group(self, group: dict) -> None:
        lr, wd, damp = group["lr"], group["weight_decay"], group["dampening"]
        mom, mom_kd = group["momentum"], group["momentum_kd"]
        mom_mean = (mom_kd + mom) / 2.0
        with_task = [p for p in group["params"] if p.grad is not None]
        task_ids = {id(p) for p in with_task}
        for p in with_task:
            d_p = p.grad if wd == 0 else p.grad.add(p, alpha=wd)
            state = self.state[p]
            buf = state.get("momentum_buffer")
            if mom != 0:
                if buf is None:
                    buf = torch.clone(d_p).detach()
                else:
                    buf.mul_(mom if id(p) in self._kd_grads else mom_mean).add_(d_p, alpha=1 - damp)
                d_p = buf
            state["momentum_buffer"] = buf
            p.add_(d_p, alpha=-lr)
        for p in group["params"]:
            g_kd = self._kd_grads.get(id(p))
            if g_kd is None:
                continue
            state = self.state[p]
            buf = state.get("momentum_kd_buffer")
            if buf is None:
                buf = torch.clone(g_kd).detach()
            elif id(p) in task_ids:
                buf.mul_(mom_kd).add_(g_kd, alpha=1 - damp)
            else:
                if wd != 0:
                    g_kd = g_kd.add(p, alpha=wd)
                buf.mul_(mom_mean).add_(g_kd, alpha=1 - damp)
            state["momentum_kd_buffer"] = buf
            p.add_(buf, alpha=-lr)
