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
    # 600 s budget, 40 s spent (the graph build and the timing in it), 0.5 s/step, 2 s per epoch,
    # 10 steps per pass
    p = plan_budget(600, spent=40, step_seconds=0.5, per_epoch=2, data_steps=10)
    # left 560 s; ~1116 steps = ~9.3 minutes of training -> 9 epochs (one a minute)
    assert p.epochs == 9
    assert p.total_steps == (560 - 9 * 2) // 0.5 // 9 * 9
    assert 40 + p.total_steps * 0.5 + 9 * 2 <= 600


def test_plan_with_a_long_pass_uses_fewer_epochs():
    p = plan_budget(120, spent=0, step_seconds=1.0, per_epoch=0, data_steps=100)
    assert p.epochs == 1 and p.steps_per_epoch == 120


def test_budget_too_short_for_one_step():
    with pytest.raises(ValueError, match="too short for one training step"):
        plan_budget(20, spent=19, step_seconds=2.0, per_epoch=1, data_steps=10)


def test_cosine_end_is_where_the_run_will_stop():
    from detect.training.time_budget import cosine_end

    # 100 steps done, 70 s left at 0.7 s a step: 100 more
    assert cosine_end(100, 424, 0.7, 70.0) == 200
    assert cosine_end(100, 150, 0.7, 70.0) == 150  # never past the planned end
    assert cosine_end(100, 424, 0.7, -5.0) == 101  # out of time: the next step
    assert cosine_end(100, 424, 0.7, 0.69) == 101
    assert cosine_end(150, 150, 0.7, 30.0) == 150  # the last planned step: the plan's end


def test_schedule_end_moves_inside_a_compiled_step_and_is_saved():
    import numpy as np
    import tensorflow as tf

    from detect.training.schedules import WarmupSchedule

    s = WarmupSchedule(0.1, warmup_steps=0, total_steps=400)
    traced = tf.function(lambda step: s(step))

    def lr(step):  # a tensor, as the optimizer's iterations: one trace for every step
        return traced(tf.constant(step, tf.int64))

    np.testing.assert_allclose(float(lr(100)), 0.05 * (1 + np.cos(np.pi * 100 / 400)), rtol=1e-6)
    s.end_at(200)  # read from the variable: the traced function sees the new end
    np.testing.assert_allclose(float(lr(100)), 0.05, rtol=1e-6)
    np.testing.assert_allclose(float(lr(200)), 0.0, atol=1e-9)
    np.testing.assert_allclose(float(lr(300)), 0.0, atol=1e-9)
    assert traced.experimental_get_tracing_count() == 1
    again = WarmupSchedule.from_config(s.get_config())  # a saved optimizer continues the same curve
    assert again.get_config()["total_steps"] == 200
    np.testing.assert_allclose(float(again(100)), 0.05, rtol=1e-6)


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_deadline_refits_the_cosine_to_the_pace_of_fit(monkeypatch):
    """1 s a step in fit, 200 s to the deadline, 400 steps planned in 4 epochs: the cosine
    must end at step 200 (less the epoch-end work still to come), not 400."""
    from types import SimpleNamespace

    import keras

    from detect.training import time_budget
    from detect.training.schedules import WarmupSchedule

    clock = _Clock()
    monkeypatch.setattr(time_budget.time, "monotonic", clock)
    for per_epoch, want in [(0.0, 200), (5.0, 185)]:
        schedule = WarmupSchedule(0.1, 0, 400)
        optimizer = keras.optimizers.SGD(learning_rate=schedule)
        model = SimpleNamespace(optimizer=optimizer, backbone_optimizer=None, stop_training=False)
        clock.now = 0.0
        deadline = time_budget.Deadline(200.0, reserve=0.0, epochs=4, steps_per_epoch=100, per_epoch=per_epoch)
        deadline.set_model(model)
        deadline.set_params({"epochs": 4, "steps": 100, "verbose": 0})
        deadline.on_epoch_begin(0)
        for step in range(1, 11):
            clock.now = float(step)  # the first step's interval (graph build) is not timed
            optimizer.iterations.assign(step)
            deadline.on_train_batch_end(step - 1)
        # at step 10: 9 timed intervals of 1 s; 190 s left, 3 epoch ends to come
        assert float(schedule.horizon.numpy()) == want and deadline.ended_at == want
        assert not model.stop_training
        clock.now = 200.5
        optimizer.iterations.assign(11)
        deadline.on_train_batch_end(10)
        assert model.stop_training and deadline.stopped_at == 11
