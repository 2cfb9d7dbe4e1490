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
    """Linear warmup from 0 to ``base``, then cosine to 0, x0.1 steps, or constant."""

    def __init__(self, base, warmup_steps, total_steps, kind="cosine", boundaries=()):
        self.base = float(base)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = max(int(total_steps), 1)
        self.kind = kind
        self.boundaries = [int(b) for b in boundaries]
        # Where the cosine reaches 0: total_steps, unless a time budget's Deadline moves it
        # (end_at) to where the run will really stop. A variable, so the compiled training
        # step reads the new end without being rebuilt.
        self.horizon = tf.Variable(float(self.total_steps), trainable=False, dtype=tf.float32,
                                   name="cosine_horizon")

    def end_at(self, step: int) -> None:
        """End the cosine at ``step`` (at least 1; a run's steps after it train at rate 0)."""
        self.horizon.assign(float(max(int(step), 1)))

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = tf.minimum(1.0, (step + 1.0) / max(self.warmup_steps, 1))
        if self.kind == "cosine":
            progress = tf.clip_by_value(step / self.horizon, 0.0, 1.0)
            lr = 0.5 * self.base * (1.0 + tf.cos(math.pi * progress))
        elif self.kind == "step":
            drops = tf.add_n([tf.cast(step >= b, tf.float32) for b in self.boundaries] or [0.0 * step])
            lr = self.base * tf.pow(0.1, drops)
        else:
            lr = self.base + 0.0 * step
        return lr * warm if self.warmup_steps > 0 else lr

    def get_config(self):
        # the end in force, so a saved optimizer continues the same curve
        return {"base": self.base, "warmup_steps": self.warmup_steps,
                "total_steps": int(round(float(self.horizon.numpy()))),
                "kind": self.kind, "boundaries": self.boundaries}
