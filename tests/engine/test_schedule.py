import math

from distillery.engine.schedule import warmup_cosine_lr


def test_warmup_plateau_cosine_by_hand():
    lrs = [warmup_cosine_lr(e, 0.01, 120, 10, 40) for e in (0, 5, 10, 39, 40, 80, 119)]
    assert math.isclose(lrs[0], 0.001) and math.isclose(lrs[1], 0.01 * (0.1 + 0.9 * 0.5))
    assert lrs[2] == lrs[3] == 0.01
    assert math.isclose(lrs[4], 0.01)
    assert math.isclose(lrs[5], 1e-7 + (0.01 - 1e-7) * 0.5)
    assert math.isclose(lrs[6], 1e-7 + (0.01 - 1e-7) * (1 + math.cos(math.pi * 79 / 80)) / 2)
