"""Partition sets: balanced (sizes differ by at most one) and sticky across rescales."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def assign(partitions: Iterable[int], workers: int,
           previous: Sequence[Sequence[int]] = ()) -> list[list[int]]:
    """Split `partitions` into min(workers, len(partitions)) balanced sets. Set i continues
    `previous[i]`: it keeps as many of those partitions as its share allows, so a rescale
    moves as few partitions as possible."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    parts = sorted(set(partitions))
    n = min(workers, len(parts))
    if n == 0:
        return []
    prev = [sorted(set(s) & set(parts)) for s in previous[:n]]
    prev += [[] for _ in range(n - len(prev))]
    base, extra = divmod(len(parts), n)
    quota = [base] * n
    # the larger shares go to the sets that already hold the most
    for i in sorted(range(n), key=lambda i: -len(prev[i]))[:extra]:
        quota[i] += 1
    sets = [old[:q] for old, q in zip(prev, quota, strict=True)]
    taken = {p for s in sets for p in s}
    free = [p for p in parts if p not in taken]
    for s, q in zip(sets, quota, strict=True):
        while len(s) < q:
            s.append(free.pop(0))
        s.sort()
    return sets


def moved(before: Sequence[Sequence[int]], after: Sequence[Sequence[int]]) -> int:
    """How many partitions changed owner between two assignments (by set position)."""
    owner = {p: i for i, s in enumerate(before) for p in s}
    return sum(1 for i, s in enumerate(after) for p in s if owner.get(p) != i)
