"""The learning-rate schedules, wsd's shape in particular."""

import math

import numpy as np
import pytest

from tinyscale import config as config_lib
from tinyscale.config import check as config_check
from tinyscale.errors import TinyscaleError
from tinyscale.train import optim


def lr_curve(total, **train):
    c = config_lib.get_config()
    c.train.update(lr=1e-2, warmup_steps=10, final_lr_ratio=0.1, **train)
    config_check.validate(c)
    s = optim.schedule(c.train, total)
    return np.array([float(s(i)) for i in range(total + 1)])


def test_wsd_warms_up_holds_then_cools_down_as_one_minus_sqrt():
    lr = lr_curve(100, schedule="wsd", decay_fraction=0.2)
    np.testing.assert_allclose(lr[:11], np.linspace(0, 1e-2, 11), rtol=1e-6)  # warmup
    np.testing.assert_allclose(lr[10:80], 1e-2, rtol=1e-6)  # stable until 80 = 100 - 20
    for i in (85, 90, 95):  # the cool-down: final + (peak - final)(1 - sqrt(x))
        x = (i - 80) / 20
        assert lr[i] == pytest.approx(1e-3 + 9e-3 * (1 - math.sqrt(x)), rel=1e-5)
    assert lr[100] == pytest.approx(1e-3, rel=1e-5)
    assert np.all(np.diff(lr[80:]) < 0)


def test_wsd_stable_phase_is_the_same_for_every_budget():
    """What branching relies on: two budgets share their steps up to the shorter's decay."""
    short, long = lr_curve(100, schedule="wsd"), lr_curve(300, schedule="wsd")
    np.testing.assert_array_equal(short[:81], long[:81])


@pytest.mark.parametrize("fraction", [0, 1.5, -0.2])
def test_a_bad_decay_fraction_is_refused_with_the_knob(fraction):
    with pytest.raises(TinyscaleError, match="train.decay_fraction"):
        lr_curve(100, schedule="wsd", decay_fraction=fraction)
