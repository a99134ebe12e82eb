import pytest

from veltrix_ray.runtime.assignment import assign, moved

pytestmark = pytest.mark.unit


def test_balanced_sets_cover_every_partition_once() -> None:
    sets = assign(range(10), 3)
    assert sorted(p for s in sets for p in s) == list(range(10))
    assert sorted(len(s) for s in sets) == [3, 3, 4]


def test_more_workers_than_partitions_leaves_no_empty_set() -> None:
    assert assign(range(3), 8) == [[0], [1], [2]]


def test_rescale_moves_as_few_partitions_as_possible() -> None:
    before = assign(range(12), 3)
    after = assign(range(12), 4, previous=before)
    assert sorted(len(s) for s in after) == [3, 3, 3, 3]
    assert moved(before, after) == 3  # only the new worker's share moves
    back = assign(range(12), 3, previous=after)
    assert moved(after, back) == 3


def test_same_input_same_assignment() -> None:
    assert assign(range(8), 2) == assign(range(8), 2, previous=assign(range(8), 2))


def test_sets_keep_their_positions_when_shrinking() -> None:
    before = [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    after = assign(range(9), 2, previous=before)
    assert set(before[0]) <= set(after[0]) and set(before[1]) <= set(after[1])
    assert moved(before, after) == 3  # only the dropped set's partitions move
