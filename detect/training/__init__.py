"""Training: the run (``engine``), its folder and resume state (``runs``), time budgets,
learning-rate schedules, transfer learning (freezing, backbone learning rates) and loss curves."""
