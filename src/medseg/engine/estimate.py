"""How long will this run take? An estimate from the first measured training steps.

A CPU run of the default 100 epochs without ``--time-budget`` can take many hours; the user is told
early (after a few steps), with the two ways to bound it.
"""

from __future__ import annotations

import time


def format_duration(seconds: float) -> str:
    """``'45 s'``, ``'12 min'``, ``'3 h 20 min'``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class DurationEstimate:
    """Times training steps after ``warmup`` steps and, once, says how long all ``total_steps`` may take.

    Call :meth:`step` after each optimiser step and :meth:`epoch_end` after each epoch's training
    part; each returns the message the first time enough is measured (``measure`` steps, or the whole
    first epoch when it is shorter), else None. Validation time is not included (a lower bound).
    """

    def __init__(self, total_steps: int, epochs: int, *, warmup: int = 1, measure: int = 5,
                 clock=time.monotonic) -> None:
        self.total_steps, self.epochs = total_steps, epochs
        self.warmup, self.measure, self.clock = warmup, measure, clock
        self.ticks, self.done = 0, False
        self.start = self.t0 = clock()

    def step(self) -> str | None:
        self.ticks += 1
        if self.ticks == self.warmup:
            self.t0 = self.clock()
        return self._message() if self.ticks == self.warmup + self.measure else None

    def epoch_end(self) -> str | None:
        return self._message() if self.ticks else None

    def _message(self) -> str | None:
        if self.done:
            return None
        self.done = True
        if self.ticks > self.warmup:
            seconds = (self.clock() - self.t0) / (self.ticks - self.warmup)
        else:  # too few steps to leave out the first (slower) one
            seconds = (self.clock() - self.start) / self.ticks
        total = seconds * self.total_steps
        return (f"at {seconds:.2f} s per step, {self.epochs} epochs ({self.total_steps} steps) may take about "
                f"{format_duration(total)} on this CPU (early stopping may end it sooner); bound it with "
                "--time-budget MINUTES or --epochs N")
