"""Learning-rate schedules that training writes into checkpoints (registered with Keras).

Kept apart from :mod:`detect.training.engine` so that loading a checkpoint (whose
optimizer refers to the schedule by its registered name ``detect>WarmupSchedule``)
needs only this small module, which ``import detect`` registers.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="detect")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to ``base``, then cosine to 0, x0.1 steps, or constant.

    What a time budget's plan decides (the warmup, where the cosine ends, the step
    boundaries) and a pause switch live in variables: the compiled training step reads
    them, so the plan can change after the step is built (:meth:`replan`, :meth:`end_at`,
    :meth:`pause`) without building it again.
    """

    def __init__(self, base, warmup_steps, total_steps, kind="cosine", boundaries=()):
        self.base = float(base)
        self.kind = kind
        self.warms = int(warmup_steps) > 0  # a stage-two or backbone schedule may start without warmup
        self._warmup = tf.Variable(float(max(int(warmup_steps), 0)), trainable=False, name="warmup_steps")
        # where the cosine reaches 0: the plan's last step, or where a Deadline expects the run to stop
        self.horizon = tf.Variable(float(max(int(total_steps), 1)), trainable=False, name="cosine_horizon")
        self._boundaries = tf.Variable([float(b) for b in boundaries], trainable=False, dtype=tf.float32,
                                       shape=[len(tuple(boundaries))], name="step_boundaries")
        self._scale = tf.Variable(1.0, trainable=False, name="lr_scale")

    @property
    def warmup_steps(self) -> int:
        return int(self._warmup.numpy())

    @property
    def total_steps(self) -> int:
        return int(round(float(self.horizon.numpy())))

    @property
    def boundaries(self) -> list[int]:
        return [int(b) for b in self._boundaries.numpy()]

    def replan(self, warmup_steps: int, total_steps: int, boundaries=()) -> None:
        """A new plan (same base rate and kind, as many boundaries); warmup only if it had one."""
        self._warmup.assign(float(max(int(warmup_steps), 0)) if self.warms else 0.0)
        self.end_at(total_steps)
        self._boundaries.assign([float(b) for b in boundaries])

    def end_at(self, step: int) -> None:
        """End the cosine at ``step`` (at least 1; a run's steps after it train at rate 0)."""
        self.horizon.assign(float(max(int(step), 1)))

    def pause(self, paused: bool) -> None:
        """Rate 0 while paused (a budget's timing steps change no weight), the schedule's after."""
        self._scale.assign(0.0 if paused else 1.0)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = tf.minimum(1.0, (step + 1.0) / tf.maximum(self._warmup, 1.0))  # 1 without warmup
        if self.kind == "cosine":
            progress = tf.clip_by_value(step / self.horizon, 0.0, 1.0)
            lr = 0.5 * self.base * (1.0 + tf.cos(math.pi * progress))
        elif self.kind == "step":
            drops = tf.reduce_sum(tf.cast(step >= self._boundaries, tf.float32))
            lr = self.base * tf.pow(0.1, drops)
        else:
            lr = self.base + 0.0 * step
        return lr * warm * self._scale

    def get_config(self):
        # the plan in force, so a saved optimizer continues the same curve
        return {"base": self.base, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "kind": self.kind, "boundaries": self.boundaries}
