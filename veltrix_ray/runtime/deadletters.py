"""The per-partition dead-letter limit: a broken producer stops its partition, loudly."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from veltrix_ray.config.schema import DeadLetterConfig


class DeadLetterLimit:
    def __init__(self, policy: DeadLetterConfig) -> None:
        self.policy = policy
        self.consecutive = 0
        self._window: deque[tuple[int, int]] = deque()  # (records, bad) per batch
        self._records = 0
        self._bad = 0

    def observe(self, records: int, bad_at: Sequence[int]) -> str | None:
        """One batch of this partition: `records` records, the bad ones at positions `bad_at`
        (ascending). Returns why the limit is exceeded (checked before the batch commits)."""
        # the longest run of bad records, continuing the run carried over from earlier batches
        run = longest = self.consecutive
        prev = -1
        for i in bad_at:
            run = run + 1 if i == prev + 1 else 1
            longest = max(longest, run)
            prev = i
        if records:
            self.consecutive = run if bad_at and bad_at[-1] == records - 1 else 0
        if longest > self.policy.max_consecutive:
            return (f"{longest} bad records in a row, over "
                    f"pipeline.dead_letters.max_consecutive={self.policy.max_consecutive}")
        self._window.append((records, len(bad_at)))
        self._records += records
        self._bad += len(bad_at)
        while self._window and self._records - self._window[0][0] >= self.policy.window:
            n, b = self._window.popleft()
            self._records -= n
            self._bad -= b
        judged = self._records >= self.policy.window
        if judged and self._bad / self._records > self.policy.max_ratio:
            return (f"{self._bad} of the last {self._records} records were bad, over "
                    f"pipeline.dead_letters.max_ratio={self.policy.max_ratio}")
        return None
