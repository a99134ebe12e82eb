"""Sliding-window meters: a worker's busy ratio, a pipeline's committed rate."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class Window:
    """A cumulative value sampled over time; `rate()` is its change per second over the last
    `span_s` seconds (over what is known when the meter is younger)."""

    def __init__(self, span_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.span_s = span_s
        self.clock = clock
        self._samples: deque[tuple[float, float]] = deque()

    def sample(self, value: float) -> None:
        now = self.clock()
        self._samples.append((now, value))
        # keep one sample at or before the window's start, so the rate spans the whole window
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.span_s:
            self._samples.popleft()

    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, v0), (t1, v1) = self._samples[0], self._samples[-1]
        return (v1 - v0) / (t1 - t0) if t1 > t0 else 0.0


class BusyMeter:
    """Seconds spent working (decode, transform, commit) per second of wall time."""

    def __init__(self, span_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.busy_s = 0.0
        self._window = Window(span_s, clock)
        self._window.sample(0.0)

    def add(self, seconds: float) -> None:
        self.busy_s += seconds
        self._window.sample(self.busy_s)

    def ratio(self) -> float:
        self._window.sample(self.busy_s)
        return min(1.0, max(0.0, self._window.rate()))
