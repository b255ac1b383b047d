"""Training progress for people watching a terminal or the Prefect UI: a line every so often with the step,
the rate and what is left."""

from __future__ import annotations

import logging
import time


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class TrainingProgress:
    """The trainer's ``progress(step, loss)`` hook: logs ``<label>: training: step 120/400 (3.1 steps/s,
    about 1 min 30 s left), loss 0.121`` at most every ``every`` seconds, and the last step."""

    def __init__(
        self, total: int, log: logging.Logger | logging.LoggerAdapter, label: str = "", every: float = 15.0
    ) -> None:
        self.total, self.log, self.every = total, log, every
        self.label = f"{label}: " if label else ""
        self.started = self.last = time.monotonic()
        self.first: int | None = None

    def __call__(self, step: int, loss: float) -> None:
        now = time.monotonic()
        if self.first is None:  # a resumed run starts past 0: its rate counts from here
            self.first, self.started = step - 1, now - 1e-9
        if now - self.last < self.every and step < self.total:
            return
        self.last = now
        rate = (step - self.first) / max(now - self.started, 1e-9)
        left = (self.total - step) / rate if rate > 0 else 0.0
        self.log.info(
            "%straining: step %d/%d (%.1f steps/s, about %s left), loss %.3f",
            self.label, step, self.total, rate, _duration(left), loss,
        )  # fmt: skip
