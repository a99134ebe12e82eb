"""Partition sets: balanced (sizes differ by at most one) and sticky across rescales."""

from __future__ import annotations

from collections.abc import Sequence


def assign(partitions: Sequence[int], workers: int,
           previous: Sequence[Sequence[int]] = ()) -> list[list[int]]:
    """Split `partitions` into min(workers, len(partitions)) balanced sets, keeping as many
    partitions as possible where `previous` had them (a rescale moves few partitions)."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    parts = sorted(set(partitions))
    n = min(workers, len(parts))
    if n == 0:
        return []
    base, extra = divmod(len(parts), n)
    quotas = [base + (1 if i < extra else 0) for i in range(n)]
    # the largest previous sets keep the largest quotas, so fewer partitions move
    prev = sorted((sorted(set(s) & set(parts)) for s in previous[:n]), key=len, reverse=True)
    prev += [[] for _ in range(n - len(prev))]
    sets: list[list[int]] = []
    taken: set[int] = set()
    for quota, old in zip(quotas, prev, strict=False):
        keep = [p for p in old if p not in taken][:quota]
        taken.update(keep)
        sets.append(keep)
    free = [p for p in parts if p not in taken]
    for quota, s in zip(quotas, sets, strict=False):
        while len(s) < quota:
            s.append(free.pop(0))
        s.sort()
    return sets


def moved(before: Sequence[Sequence[int]], after: Sequence[Sequence[int]]) -> int:
    """How many partitions changed owner between two assignments (by set position)."""
    owner = {p: i for i, s in enumerate(before) for p in s}
    return sum(1 for i, s in enumerate(after) for p in s if owner.get(p) != i)
