import pytest

from detect.training.time_budget import parse_duration, plan_budget


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("20m", 1200), ("1h", 3600), ("1h30m", 5400),
                                          ("45", 45), ("1.5m", 90)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "20x", "m", "-5m", "0s", "5m20"])
def test_parse_duration_rejects(bad):
    with pytest.raises(ValueError, match="time-budget"):
        parse_duration(bad)


def test_plan_fits_steps_and_epochs():
    # 600 s budget, 30 s spent, 10 s graph build, 0.5 s/step, 2 s per epoch, 10 steps per pass
    p = plan_budget(600, spent=30, step_seconds=0.5, first_call=10, per_epoch=2, data_steps=10)
    # left 560 s; ~1116 steps = ~9.3 minutes of training -> 9 epochs (one a minute)
    assert p.epochs == 9
    assert p.total_steps == (560 - 9 * 2) // 0.5 // 9 * 9
    assert 30 + 10 + p.total_steps * 0.5 + 9 * 2 <= 600


def test_plan_with_a_long_pass_uses_fewer_epochs():
    p = plan_budget(120, spent=0, step_seconds=1.0, first_call=0, per_epoch=0, data_steps=100)
    assert p.epochs == 1 and p.steps_per_epoch == 120


def test_budget_too_short_for_one_step():
    with pytest.raises(ValueError, match="too short for one training step"):
        plan_budget(20, spent=15, step_seconds=2.0, first_call=4, per_epoch=1, data_steps=10)
