"""Supervision's verdicts: lost workers come back for ever in a `forever` run, with capped
backoff; a crash that recurs at one place stops that place's partitions."""

from __future__ import annotations

from veltrix_ray.config.schema import TopologyConfig
from veltrix_ray.runtime.coordinator.health import Death, Failure, GiveUp, Restart, SlotHealth

TOPO = TopologyConfig(max_restarts=2, restart_window_s=60, restart_backoff_s=0.5,
                      restart_backoff_max_s=4)
LOST = Failure(Death.LOST, "died (killed)")


def crash(where: dict[int, tuple[int, int]], cause: str = "ValueError") -> Failure:
    return Failure(Death.CRASH, "failed: boom", cause, where)


def test_a_forever_run_restarts_lost_workers_for_ever_with_capped_backoff() -> None:
    health = SlotHealth(TOPO, forever=True, jitter=lambda: 1.0)
    delays = []
    for i in range(50):  # kills every second: far more than any window allows
        verdict = health.failed(LOST, float(i))
        assert isinstance(verdict, Restart) and not verdict.stop
        delays.append(verdict.delay)
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(delays) == TOPO.restart_backoff_max_s


def test_backoff_starts_again_once_the_window_passed_without_failures() -> None:
    health = SlotHealth(TOPO, forever=True, jitter=lambda: 1.0)
    for i in range(5):
        health.failed(LOST, float(i))
    verdict = health.failed(LOST, 1000.0)
    assert isinstance(verdict, Restart) and verdict.delay == TOPO.restart_backoff_s


def test_jitter_takes_at_most_half_off() -> None:
    verdict = SlotHealth(TOPO, forever=True, jitter=lambda: 0.0).failed(LOST, 0.0)
    assert isinstance(verdict, Restart) and verdict.delay == TOPO.restart_backoff_s / 2


def test_a_drained_run_gives_up_on_a_worker_lost_too_often() -> None:
    health = SlotHealth(TOPO, forever=False)
    verdicts = [health.failed(LOST, float(i)) for i in range(3)]
    assert [type(v) for v in verdicts] == [Restart, Restart, GiveUp]


def test_the_same_crash_on_overlapping_batches_stops_that_partition_only() -> None:
    """A restarted worker commits a small first batch, then fails again on the same record:
    the failing batches overlap; partition 1 moves on between them."""
    health = SlotHealth(TOPO, forever=True)
    spans = [((510, 1009), (0, 9)), ((520, 1019), (10, 19)), ((530, 1029), (20, 29))]
    verdicts = [health.failed(crash({0: zero, 1: one}), float(i))
                for i, (zero, one) in enumerate(spans)]
    assert [v.stop for v in verdicts if isinstance(v, Restart)] == [{}, {}, {0: (530, 1009)}]
    assert isinstance(verdicts[2], Restart) and verdicts[2].repeats == 3


def test_crashes_that_move_on_or_differ_never_stop_anything() -> None:
    health = SlotHealth(TOPO, forever=True)
    for i in range(20):
        verdict = health.failed(crash({0: (i * 10, i * 10 + 9)}), float(i))
        assert isinstance(verdict, Restart) and not verdict.stop
    for i in range(20):  # another exception each time at the same place
        verdict = health.failed(crash({0: (100, 200)}, cause=f"Error{i}"), float(i))
        assert isinstance(verdict, Restart) and not verdict.stop


def test_crashes_spread_wider_than_the_window_never_stop_anything() -> None:
    health = SlotHealth(TOPO, forever=True)
    for i in range(10):
        verdict = health.failed(crash({0: (40, 50)}), i * 61.0)
        assert isinstance(verdict, Restart) and not verdict.stop
