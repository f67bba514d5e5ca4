"""DOT optimizer (mdistiller.md section 3, DOT).

Golden parameters were produced by the official ``DistillationOrientedTrainer`` (mdistiller a08d46f,
``mdistiller/engine/dot.py``) on the tiny problem below, driven exactly like the official ``DOT`` trainer.
"""

import pytest
import torch

from distillery.losses.math.dot import DistillationOrientedSGD, dot_momenta


def _problem():
    w = torch.tensor([0.5, -1.0, 0.25], requires_grad=True)  # gets task and KD gradients
    b = torch.tensor([0.2], requires_grad=True)  # task gradient only
    c = torch.tensor([0.3, -0.1, 0.7], requires_grad=True)  # KD gradient only
    return [w, b, c]


_X = torch.tensor([[1.0, 2.0, -1.0], [0.5, -0.5, 2.0]])
_Y = torch.tensor([1.0, -2.0])


def _losses(w, b, c):
    out = _X @ w
    loss_ce = ((out + b - _Y) ** 2).mean()
    loss_kd = ((out.unsqueeze(1) * c - 0.5) ** 2).sum() * 0.3
    return loss_ce, loss_kd


def _train(params, opt, steps, set_to_none=True):
    for _ in range(steps):
        loss_ce, loss_kd = _losses(*params)
        opt.zero_grad(set_to_none=True)
        loss_kd.backward(retain_graph=True)
        opt.step_kd()
        opt.zero_grad(set_to_none=set_to_none)
        loss_ce.backward()
        opt.step()


OFFICIAL = [  # hyper-parameters, parameters (w, b, c) after 4 official iterations
    (dict(lr=0.1, momentum=0.825, momentum_kd=0.975, weight_decay=5e-4),
     [[0.441390991, -0.126461416, -1.3415674], [-0.638152421], [-0.0967556387, 0.0602061711, -0.253717363]]),
    (dict(lr=0.05, momentum=0.81, momentum_kd=0.99, weight_decay=0.1, dampening=0.2),
     [[0.703855991, 0.510211706, -1.69873142], [-0.202908888], [0.0245573856, -0.0337002985, 0.0828150809]]),
    (dict(lr=0.1, momentum=0.0, momentum_kd=0.5, weight_decay=0.01),
     [[0.607287824, -0.13124916, -0.937261999], [-0.160100952], [0.0458212532, -0.03834318, 0.12998566]]),
]


@pytest.mark.parametrize("hyper, expected", OFFICIAL)
def test_matches_official_updates(hyper, expected):
    params = _problem()
    _train(params, DistillationOrientedSGD(params, **hyper), steps=4)
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.detach(), torch.tensor(e), rtol=1e-5, atol=1e-7)


def test_hand_computed_two_steps_scalar():
    """Constant gradients: task g = 2, KD g = 3 on one shared scalar."""
    lr, mu, mu_kd, wd = 0.1, 0.8, 0.95, 0.01
    theta = torch.tensor([1.0], requires_grad=True)
    opt = DistillationOrientedSGD([theta], lr=lr, momentum=mu, momentum_kd=mu_kd, weight_decay=wd)
    expected, buf, buf_kd = 1.0, None, None
    for _ in range(2):
        (3.0 * theta).sum().backward()
        opt.step_kd()
        opt.zero_grad()
        (2.0 * theta).sum().backward()
        opt.step()
        opt.zero_grad()
        d = 2.0 + wd * expected
        buf = d if buf is None else mu * buf + d
        expected -= lr * buf
        buf_kd = 3.0 if buf_kd is None else mu_kd * buf_kd + 3.0  # no weight decay for a shared param
        expected -= lr * buf_kd
    assert theta.item() == pytest.approx(expected, rel=1e-6)
    assert opt.state[theta]["momentum_buffer"].item() == pytest.approx(buf, rel=1e-6)
    assert opt.state[theta]["momentum_kd_buffer"].item() == pytest.approx(buf_kd, rel=1e-6)


def test_kd_gradients_are_copied():
    """With zero_grad(set_to_none=False) the recorded KD gradient must survive the in-place zeroing
    (every parameter is shared here, so both calls see the same sets of parameters)."""
    def shared_problem():
        return [torch.tensor([0.5, -1.0, 0.25], requires_grad=True)]

    def run(set_to_none):
        (w,) = params = shared_problem()
        opt = DistillationOrientedSGD(params, lr=0.1, momentum=0.825, momentum_kd=0.975, weight_decay=5e-4)
        for _ in range(3):
            out = _X @ w
            loss_ce, loss_kd = ((out - _Y) ** 2).mean(), ((out - 0.5) ** 2).sum()
            opt.zero_grad(set_to_none=True)
            loss_kd.backward(retain_graph=True)
            opt.step_kd()
            opt.zero_grad(set_to_none=set_to_none)
            loss_ce.backward()
            opt.step()
        return w.detach()

    torch.testing.assert_close(run(False), run(True), rtol=0, atol=0)


def test_resume_from_state_dict():
    hyper = OFFICIAL[0][0]
    params = _problem()
    opt = DistillationOrientedSGD(params, **hyper)
    _train(params, opt, steps=2)
    resumed = [p.detach().clone().requires_grad_() for p in params]
    opt2 = DistillationOrientedSGD(resumed, **hyper)
    opt2.load_state_dict(opt.state_dict())
    assert set(opt2.state[resumed[0]]) == {"momentum_buffer", "momentum_kd_buffer"}
    _train(resumed, opt2, steps=2)
    for p, e in zip(resumed, OFFICIAL[0][1]):
        torch.testing.assert_close(p.detach(), torch.tensor(e), rtol=1e-5, atol=1e-7)


def test_momenta_and_validation():
    assert dot_momenta(0.9, 0.075) == pytest.approx((0.825, 0.975))
    assert dot_momenta(0.9, 0.09) == pytest.approx((0.81, 0.99))
    p = [torch.zeros(1, requires_grad=True)]
    for bad in (dict(lr=-1.0), dict(lr=0.1, momentum=-0.1), dict(lr=0.1, momentum_kd=-0.1),
                dict(lr=0.1, weight_decay=-1.0)):
        with pytest.raises(ValueError):
            DistillationOrientedSGD(p, **bad)
