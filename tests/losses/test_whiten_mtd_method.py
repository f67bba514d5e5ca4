"""Distiller ``whiten_mtd`` (whiten_mtd.md section 3): whitened teachers, two views, several teachers."""

import pytest
import torch

from distillery.losses import build_method, functional
from distillery.models import ModelOutput
from distillery.models.whitening import WhiteningLayer, fit_pca_whitening

torch.set_num_threads(1)


def _out(emb):
    return ModelOutput(feats=[], pooled=emb, embedding=emb)


def _case():
    g = torch.Generator().manual_seed(4)
    s1, s2 = torch.randn(6, 5, generator=g, requires_grad=True), torch.randn(6, 5, generator=g, requires_grad=True)
    t = [(torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)),
         (torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g))]
    whitenings = [fit_pca_whitening(torch.randn(50, d, generator=g) + 1.0) for d in (8, 3)]
    return s1, s2, t, whitenings


@pytest.mark.parametrize("strategy", ["mean", "maxmin", "maxmean"])
def test_two_views_two_whitened_teachers_equal_the_functional(strategy):
    s1, s2, t, whitenings = _case()
    d = build_method("whiten_mtd", kd_weight=1.5, teachers=["teacher", "teacher_b"], strategy=strategy,
                     temp_student=0.1, temp_teacher=0.05)
    d.set_whitening([WhiteningLayer(w) for w in whitenings])
    terms = d((_out(s1), _out(s2)), [(_out(a), _out(b)) for a, b in t], torch.zeros(6, dtype=torch.long))
    expected = functional.whitened_similarity_loss(
        s1, [w.apply(a) for w, (a, _) in zip(whitenings, t)], strategy, 0.1, 0.05,
        emb_s2=s2, embs_t2=[w.apply(b) for w, (_, b) in zip(whitenings, t)])
    assert list(terms) == ["kd"] and terms["kd"].dim() == 0
    torch.testing.assert_close(terms["kd"], 1.5 * expected, rtol=1e-6, atol=0)
    terms["kd"].backward()
    assert s1.grad is not None and s2.grad is not None and s1.grad.abs().sum() > 0


def test_whiten_false_uses_raw_teacher_embeddings_and_whitening_matters():
    s1, s2, t, whitenings = _case()
    raw = build_method("whiten_mtd", teachers=["a", "b"], whiten=False)
    white = build_method("whiten_mtd", teachers=["a", "b"])
    white.set_whitening([WhiteningLayer(w) for w in whitenings])
    student, teachers = (_out(s1), _out(s2)), [(_out(a), _out(b)) for a, b in t]
    expected = functional.whitened_similarity_loss(s1, [a for a, _ in t], "maxmin", 0.05, 0.05,
                                                   emb_s2=s2, embs_t2=[b for _, b in t])
    torch.testing.assert_close(raw(student, teachers, None)["kd"], expected)
    assert abs(white(student, teachers, None)["kd"].item() - expected.item()) > 1e-3


def test_teacher_order_follows_the_teachers_list():
    """maxfix takes the off-diagonal from the last teacher: swapping the outputs changes the loss unless the
    names are swapped with them (the distiller never reorders)."""
    s1, s2, t, _ = _case()
    d = build_method("whiten_mtd", teachers=["a", "b"], whiten=False, strategy="maxfix")
    student = (_out(s1), _out(s2))
    ab = d(student, [(_out(a), _out(b)) for a, b in t], None)["kd"]
    ba = d(student, [(_out(a), _out(b)) for a, b in reversed(t)], None)["kd"]
    assert abs(ab.item() - ba.item()) > 1e-4


def test_single_view_and_bare_output_for_one_teacher():
    s1, _, t, whitenings = _case()
    d = build_method("whiten_mtd", kd_weight=2.0)
    d.set_whitening([WhiteningLayer(whitenings[0])])
    value = d(_out(s1), _out(t[0][0]), None)["kd"]
    expected = functional.whitened_similarity_loss(s1, [whitenings[0].apply(t[0][0])], "maxmin", 0.05, 0.05)
    torch.testing.assert_close(value, 2.0 * expected)
    torch.testing.assert_close(d(_out(s1), [_out(t[0][0])], None)["kd"], value)


def test_student_equal_to_teacher_gives_zero():
    """Spec invariant: every teacher equal to the student and τs = τt -> L = 0 (whiten off)."""
    s1, s2, _, _ = _case()
    d = build_method("whiten_mtd", teachers=["a", "b"], whiten=False, temp_student=0.07, temp_teacher=0.07)
    loss = d((_out(s1), _out(s2)), [(_out(s1), _out(s2))] * 2, None)["kd"]
    assert abs(loss.item()) < 1e-6


def test_state_has_only_whitening_buffers_and_no_parameters():
    _, _, _, whitenings = _case()
    d = build_method("whiten_mtd", teachers=["a", "b"])
    d.set_whitening([WhiteningLayer(w) for w in whitenings])
    assert list(d.parameters()) == []
    assert sorted(d.state_dict()) == ["whitenings.0.mean", "whitenings.0.projection", "whitenings.1.mean",
                                      "whitenings.1.projection"]


def test_errors():
    s1, s2, t, whitenings = _case()
    with pytest.raises(ValueError, match="strategy"):
        build_method("whiten_mtd", strategy="rand")
    with pytest.raises(ValueError, match="teacher names"):
        build_method("whiten_mtd", teachers="teacher")
    with pytest.raises(ValueError, match="repeat"):
        build_method("whiten_mtd", teachers=["a", "a"])
    with pytest.raises(ValueError, match="temperatures"):
        build_method("whiten_mtd", temp_student=0.0)
    d = build_method("whiten_mtd", teachers=["a", "b"])
    with pytest.raises(ValueError, match="whitening layers"):
        d.set_whitening([WhiteningLayer(whitenings[0])])
    with pytest.raises(RuntimeError, match="set_whitening"):
        d((_out(s1), _out(s2)), [(_out(a), _out(b)) for a, b in t], None)
    d.set_whitening([WhiteningLayer(w) for w in whitenings])
    with pytest.raises(ValueError, match="2 teachers"):
        d((_out(s1), _out(s2)), [(_out(t[0][0]), _out(t[0][1]))], None)
    with pytest.raises(ValueError, match="views"):
        d((_out(s1), _out(s2)), [(_out(t[0][0]), _out(t[0][1])), _out(t[1][0])], None)
    with pytest.raises(TypeError, match="ModelOutput"):
        d([_out(s1), _out(s2)], [(_out(a), _out(b)) for a, b in t], None)
