"""Training for a wall-clock budget: parse it, measure a step, plan the schedule, stop on time.

People with one CPU and an afternoon think in minutes, not epochs. With
``--time-budget 20m`` the engine measures how long one training step takes
on this machine (a few of ``fit``'s own steps on real batches with the
learning rate paused at 0, after the untimed first call that builds the
training step, which the run then reuses), plans how many steps fit in what
is left (after the set-up already spent and the per-epoch checkpoint and
validation), and sets epochs, steps per epoch, warmup and the cosine length
to that plan. A :class:`Deadline` callback keeps the cosine ending where the
run will really stop, from fit's own pace, and stops training cleanly if the
machine turns out slower than measured, so the run always ends with a final
model.
"""

from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import dataclass

import keras

from detect.training.optimizers import build_optimizers
from detect.training.schedules import WarmupSchedule

_UNITS = {"s": 1, "m": 60, "h": 3600}
#: Under a budget the run is split into at most this many epochs (checkpoint
#: and validation points), each at least a pass over the data and a minute.
BUDGET_EPOCHS = 20


def parse_duration(text: str) -> float:
    """``"90s"``, ``"20m"``, ``"1h"``, ``"1h30m"``, or plain seconds -> seconds."""
    raw = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", raw):
        seconds = float(raw)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smh])", raw)
        if not parts or "".join(f"{n}{u}" for n, u in parts) != raw.replace(" ", ""):
            raise ValueError(f"--time-budget {text!r}: use a duration such as 90s, 20m, 1h or 1h30m")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"--time-budget {text!r} must be positive")
    return seconds


#: The shortest ``--time-budget`` a command accepts: set-up alone (reading and checking the data,
#: building the model, timing a step) takes 30-90 s on a 2-core CPU before the first step.
MIN_BUDGET = 60.0


def check_budget(text) -> float:
    """:func:`parse_duration`, refusing a budget below :data:`MIN_BUDGET` before any set-up."""
    seconds = parse_duration(text) if isinstance(text, str) else float(text)
    if seconds < MIN_BUDGET:
        raise ValueError(f"--time-budget {text}: shorter than the set-up alone (reading the data, building "
                         f"the model and timing a step take 30-90 s on a small CPU); give at least "
                         f"{format_seconds(MIN_BUDGET)}")
    return seconds


def measure_step_seconds(model, batches, *, steps: int = 12, drain: int = 3,
                         max_seconds: float = 30.0) -> tuple[float, float]:
    """(seconds per training step, seconds of the first call), timed in ``model.fit`` itself.

    ``model`` is compiled with the run's optimizers. One ``fit`` of ``1 + drain +
    steps`` steps runs with every :class:`WarmupSchedule` paused (rate 0): the
    first call builds fit's training step, which the run then reuses (a separate
    timing function built a second graph: 13-14 s of a budget on the pretrained
    recipe, before fit's own first call took 22-24 s); ``drain`` untimed steps follow
    (the pipeline prepared batches while the graph was built, so the first steps
    read ready ones and do not compete with augmentation for the CPU); then a
    block of ``steps`` is timed as a whole, between the ends of steps, so the
    data, the update and fit's callbacks are in it (ended early once it has
    taken ``max_seconds``, after at least two steps). Afterwards every weight
    and optimizer variable (moments, EMA, the iteration count) is put back as
    it was: the measurement leaves no trace in training.
    """
    optimizers = build_optimizers(model)
    saved = [(v, v.numpy()) for v in [*model.weights, *[w for o in optimizers for w in o.variables]]]
    schedules = learning_rate_schedules(model)
    timer = _StepTimer(drain, max_seconds)
    for schedule in schedules:
        schedule.pause(True)
    try:
        model.fit(batches, epochs=1, steps_per_epoch=1 + drain + steps, shuffle=False, verbose=0,
                  callbacks=[timer])
    finally:
        for schedule in schedules:
            schedule.pause(False)
        for v, value in saved:
            v.assign(value)
    return timer.result()


class _StepTimer(keras.callbacks.Callback):
    """Times a measuring fit: its first call, then the steps after ``drain`` as one block."""

    def __init__(self, drain: int, max_seconds: float):
        super().__init__()
        self.drain, self.max_seconds = drain, max_seconds
        self._begin = self._t0 = self._end = 0.0
        self._first = 0.0
        self._calls = self._timed = 0

    def on_train_begin(self, logs=None):
        self._begin = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        self._calls += 1
        if self._calls == 1:
            self._first = now - self._begin
        if self._calls == 1 + self.drain:
            self._t0 = now
        elif self._calls > 1 + self.drain:
            self._timed, self._end = self._timed + 1, now
            if self._timed >= 2 and now - self._t0 > self.max_seconds:
                self.model.stop_training = True

    def result(self) -> tuple[float, float]:
        if not self._timed:
            raise RuntimeError("measure_step_seconds: the measuring fit ended before its timed steps")
        return (self._end - self._t0) / self._timed, self._first


@dataclass(frozen=True)
class BudgetPlan:
    epochs: int
    steps_per_epoch: int
    step_seconds: float
    overhead_seconds: float  # set-up + graph builds + per-epoch checkpoints / validation

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def describe(self, budget: float) -> str:
        return (f"time budget {format_seconds(budget)}: {self.total_steps} steps "
                f"({self.epochs} epochs x {self.steps_per_epoch}) at {self.step_seconds:.2f} s/step, "
                f"~{format_seconds(self.overhead_seconds)} for set-up, checkpoints and validation")


def plan_budget(budget: float, *, spent: float, step_seconds: float,
                per_epoch: float, data_steps: int) -> BudgetPlan:
    """Steps that fit: ``budget - spent - epochs * per_epoch`` at ``step_seconds`` (``spent``
    includes building the training step, which the measurement did).

    ``data_steps`` (one pass over the data) sets the epoch length when the
    budget allows fewer than :data:`BUDGET_EPOCHS` passes. Raises a
    ValueError when not even one step fits.
    """
    left = budget - spent
    if left < step_seconds + per_epoch:
        raise ValueError(
            f"the time budget of {format_seconds(budget)} is too short for one training step: "
            f"set-up took {format_seconds(spent)} (reading the data, building the model and its "
            f"training step, timing steps), and one step takes {step_seconds:.2f} s plus "
            f"{per_epoch:.1f} s to checkpoint and validate")
    total = int((left - per_epoch) // step_seconds)
    # an epoch (checkpoint + validation point) is at least one pass over the
    # data and at least a minute of training, and there are at most 20
    epochs = max(1, min(BUDGET_EPOCHS, total // max(data_steps, 1), int(total * step_seconds // 60)))
    total = int((left - epochs * per_epoch) // step_seconds)
    epochs = max(1, min(epochs, total))
    steps = max(1, total // epochs)
    return BudgetPlan(epochs, steps, step_seconds, spent + epochs * per_epoch)


def format_seconds(s: float) -> str:
    s = float(s)
    if s < 90:
        return f"{s:.0f}s"
    if s < 5400:
        return f"{s / 60:.1f}m"
    return f"{s / 3600:.2f}h"


#: A running budget re-plans the cosine's end every this many steps, from the pace of fit's
#: last PACE_WINDOW steps (recent: a run whose backbone thaws after a first stage slows down).
REPLAN_EVERY = 10
PACE_WINDOW = 50


def cosine_end(done: int, planned: int, step_seconds: float, seconds_left: float) -> int:
    """The step where the learning rate should reach 0: where the run will stop.

    ``done`` steps are behind us; at ``step_seconds`` a step, ``seconds_left`` (to the
    deadline, less the epoch-end work still to come) holds ``seconds_left / step_seconds``
    more. Never past the ``planned`` end (fit stops there) nor before the next step.
    """
    reachable = done + int(max(seconds_left, 0.0) / step_seconds) if step_seconds > 0 else planned
    return min(planned, max(done + 1, reachable))


class Deadline(keras.callbacks.Callback):
    """Stops training when the wall clock reaches ``deadline - reserve`` (time.monotonic()),
    and keeps the cosine learning rate ending there.

    The plan comes from a short measurement before training; a shared machine then runs
    its steps 5-15% slower or faster for minutes at a time (epochs of one 20-minute run
    took 595-771 ms a step). Stopped early, a run would end at a learning rate well
    above 0 (at 85% of a cosine, 5% of the peak), with its last steps unannealed. So every
    :data:`REPLAN_EVERY` steps the callback times fit's last :data:`PACE_WINDOW` steps (the
    intervals between their ends within an epoch: data, step and callbacks; not the graph
    build or the epoch-end work) and moves each cosine schedule's end (:meth:`WarmupSchedule.end_at`)
    to the step :func:`cosine_end` predicts, never past the planned one.

    ``epochs`` x ``steps_per_epoch``: the whole run's plan (both stages of a run whose
    backbone is frozen at first: one cosine spans them; None: only stop). ``per_epoch``:
    seconds of checkpoint and validation at each epoch's end, kept aside for the epochs
    still to come.
    """

    def __init__(self, deadline: float, reserve: float, *, epochs: int | None = None,
                 steps_per_epoch: int | None = None, per_epoch: float = 0.0):
        super().__init__()
        self.deadline, self.reserve, self.per_epoch = deadline, reserve, per_epoch
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.stopped_at: int | None = None
        self.ended_at: int | None = None  # the cosine's end, once moved from the plan
        self._steps = 0
        self._epoch = 0
        self._last: float | None = None  # end of the previous step of this epoch
        self._intervals: deque[float] = deque(maxlen=PACE_WINDOW)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._last = epoch, None

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        self._steps += 1
        if self._last is not None:
            self._intervals.append(now - self._last)
        self._last = now
        if now > self.deadline - self.reserve and not self.model.stop_training:
            self.stopped_at = self._steps
            self.model.stop_training = True
        elif self._intervals and self._steps % REPLAN_EVERY == 0:
            self._replan(now)

    def _replan(self, now: float) -> None:
        schedules = [s for s in learning_rate_schedules(self.model) if s.kind == "cosine"]
        if not schedules or not self.epochs or not self.steps_per_epoch:
            return
        planned = self.epochs * self.steps_per_epoch
        epochs_after = self.epochs - self._epoch - 1
        left = self.deadline - self.reserve - now - epochs_after * self.per_epoch
        done = int(self.model.optimizer.iterations.numpy())
        end = cosine_end(done, planned, sum(self._intervals) / len(self._intervals), left)
        if end != schedules[0].total_steps:
            for schedule in schedules:
                schedule.end_at(end)
            self.ended_at = end if end != planned else None


def learning_rate_schedules(model) -> list[WarmupSchedule]:
    """The :class:`WarmupSchedule` objects of the model's optimizers (the heads' and, when it has
    its own rate, the backbone's)."""
    found = []
    for optimizer in (model.optimizer, getattr(model, "backbone_optimizer", None)):
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # under mixed_float16 loss scaling
        # Keras keeps the schedule object, not its value, in _learning_rate
        schedule = getattr(optimizer, "_learning_rate", None)
        if isinstance(schedule, WarmupSchedule):
            found.append(schedule)
    return found
