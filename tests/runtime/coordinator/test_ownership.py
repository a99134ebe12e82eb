"""The coordinator's logic on a fake pool and a fake clock (no Ray): starts interrupted by
rescales and stops, workers dying mid-rescale, the crash window, orphans, names, autoscale.
Each race CI found once has its test here."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from veltrix_ray.errors import VeltrixError
from veltrix_ray.runtime.autoscale import Decision

from .fakes import Harness, harness


def arun(scenario: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """A test of an async scenario (one event loop per test, a bound on its time)."""
    @functools.wraps(scenario)
    def test() -> None:
        asyncio.run(asyncio.wait_for(scenario(), 30))
    return test


def one_owner_each(h: Harness, partitions: int = 8) -> bool:
    owners = h.owners()
    return sorted(owners) == list(range(partitions)) and all(
        len(o) == 1 for o in owners.values())


def assert_unique_names(h: Harness) -> None:
    names = h.names()
    assert len(names) == len(set(names)), names


@arun
async def test_the_first_workers_take_their_sets_and_a_stop_ends_the_run() -> None:
    h = harness()
    h.begin()
    await h.until("both sets owned", lambda: one_owner_each(h))
    assert [sorted(w.owned) for w in h.pool.running()] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    await h.own.stop()
    await h.ended()
    assert not h.pool.running()


@arun
async def test_a_stop_during_the_start_reaches_the_workers_started_after_it() -> None:
    """6780c97: the stop came while the first set's claim waited; the second worker, started
    after it, was never stopped and the run never ended."""
    h = harness("topology.workers=2")
    h.claims.hold()
    h.begin(first=False)
    await h.until("the first claim waiting", lambda: h.own.slots != [])
    await h.own.stop()
    h.claims.release()
    await h.ended()
    assert h.pool.workers and not h.pool.running()
    assert all(w.stop_asked for w in h.pool.workers)


@arun
async def test_a_rescale_and_a_stop_asked_during_the_start() -> None:
    """d7bfee9 and 6780c97: a rescale asked while the first workers take their partitions
    waits for them (it ran on a half-started set and created a worker twice); a stop asked
    meanwhile stops what the rescale started, and refuses the rescale if it comes first."""
    h = harness("topology.workers=2")
    h.claims.hold()
    h.begin()
    await h.until("the start under way", lambda: h.own.slots != [])
    rescale = asyncio.ensure_future(h.own.rescale(3))
    await asyncio.sleep(0.01)
    assert not rescale.done() and len(h.pool.workers) == 2  # waits for the start
    h.claims.release()
    move = await asyncio.wait_for(rescale, 5)
    assert move["workers"] == 3
    await h.until("three sets owned", lambda: one_owner_each(h) and len(h.pool.running()) == 3)
    assert_unique_names(h)
    h.claims.hold()
    again = asyncio.ensure_future(h.own.rescale(4))
    await h.until("the rescale claiming", lambda: h.own.rescaling.locked())
    await h.own.stop()
    h.claims.release()
    await asyncio.wait({again}, timeout=5)  # it ran or it failed: what it started stops
    await h.ended()
    assert not h.pool.running()
    with pytest.raises(VeltrixError, match="stopping"):
        await h.own.rescale(2)


@arun
async def test_a_stop_during_a_restart_backoff_ends_the_run() -> None:
    """A worker lost just before the stop came back after its backoff, after the stop had
    gone out: nobody stopped it."""
    h = harness()
    h.begin()
    await h.until("both sets owned", lambda: one_owner_each(h))
    h.pool.die(h.pool.running()[0])
    await h.until("the restart scheduled", lambda: any(s.restart_at for s in h.own.slots))
    await h.own.stop()
    h.clock.now += 100  # past the backoff
    await h.ended()
    assert not h.pool.running()


@arun
async def test_a_worker_dying_mid_rescale_its_orphans_converge() -> None:
    """2 -> 3 workers: worker 0 gives partition 3 up, worker 1 dies when asked for 7. The
    rescale fails; partition 3 has no owner; supervision assigns it again."""
    h = harness()
    h.begin()
    await h.until("both sets owned", lambda: one_owner_each(h))
    dying = next(w for w in h.pool.running() if 7 in w.owned)
    dying.die_on_release = True
    with pytest.raises(VeltrixError):
        await h.own.rescale(3)
    assert h.owners().get(3) is None  # released, then the move stopped
    await h.until("the restart scheduled", lambda: any(s.restart_at for s in h.own.slots))
    h.clock.now += 100  # the dead worker's backoff, and the repair's
    await h.until("every partition owned once by 3 workers",
                  lambda: one_owner_each(h) and len(h.pool.running()) == 3, timeout=10)
    assert sorted(sorted(w.owned) for w in h.pool.running()) == [[0, 1, 2], [3, 7], [4, 5, 6]]
    assert [m["why"] for m in h.own.ledger.moves] == ["converge"]
    assert_unique_names(h)


@arun
async def test_partitions_a_failed_claim_left_without_owner_are_assigned_again() -> None:
    """37bf4dd: a rescale whose claim could not get its lock had released partitions that
    then had no owner; supervision checks every tick and repairs it."""
    h = harness()
    h.begin()
    await h.until("both sets owned", lambda: one_owner_each(h))
    h.claims.refuse = 1
    with pytest.raises(VeltrixError, match="lock not granted"):
        await h.own.rescale(3)
    assert sorted(h.owners()) == [0, 1, 2, 4, 5, 6]  # 3 and 7 released, not claimed
    h.clock.now += 100
    await h.until("every partition owned once",
                  lambda: one_owner_each(h) and len(h.pool.running()) == 3)
    assert [m["why"] for m in h.own.ledger.moves] == ["converge"]


@arun
async def test_lost_workers_come_back_for_ever_with_backoff() -> None:
    """More losses per slot than any crash window allows (max_restarts=2): a `forever` run
    restarts them, each under a new name and new epochs, and counts them."""
    h = harness("topology.max_restarts=2")
    h.begin()
    for _ in range(8):
        await h.until("both sets owned", lambda: one_owner_each(h))
        for w in h.pool.running():
            h.pool.die(w)
        await h.until("the restarts scheduled",
                      lambda: all(s.restart_at is not None for s in h.own.slots))
        assert all(s.restart_at <= h.clock.now + 8 for s in h.own.slots  # type: ignore[operator]
                   ), "the backoff is capped at topology.restart_backoff_max_s"
        assert not h.pool.running()
        h.clock.now += 8
    await h.until("both sets owned", lambda: one_owner_each(h))
    assert [s.restarts for s in h.own.slots] == [8, 8]
    assert h.metrics.restarts == 16
    assert [w["restarts"] for w in h.own.progress()["workers"]] == [8, 8]
    assert not h.own.ledger.errors
    assert_unique_names(h)
    assert h.claims.epochs[0] == 9  # claimed again at each restart: the dead are fenced
    await h.own.stop()
    await h.ended()


@arun
async def test_a_drained_run_gives_up_on_a_worker_lost_too_often() -> None:
    h = harness("until=drained", "topology.max_restarts=1")
    h.begin()
    for _ in range(2):
        await h.until("both sets owned", lambda: one_owner_each(h))
        h.pool.die(next(w for w in h.pool.running() if 0 in w.owned))
        await h.until("the restart", lambda: any(s.restart_at for s in h.own.slots)
                      or bool(h.own.ledger.errors))
        h.clock.now += 8
    await h.ended()
    [(kind, message)] = h.own.ledger.errors
    assert kind == "VeltrixError" and "2 times in the last 300s" in message


@arun
async def test_the_same_crash_again_and_again_stops_its_partition_the_rest_goes_on() -> None:
    h = harness("topology.max_restarts=2")
    h.begin()
    for _ in range(3):
        await h.until("both sets owned", lambda: one_owner_each(h) or bool(h.own.ledger.stopped))
        crashing = next(w for w in h.pool.running() if 0 in w.owned)
        h.pool.crash(crashing, {0: (100, 199), 1: (40, 40)})
        await h.until("the restart scheduled", lambda: any(s.restart_at for s in h.own.slots))
        h.clock.now += 8
    await h.until("slot 0 back", lambda: any(0 in w.owned for w in h.pool.running()))
    back = next(w for w in h.pool.running() if 0 in w.owned)
    assert list(back.stopped) == [0, 1]  # both stuck at one place: both stop
    assert back.stopped[0].startswith("worker 0: partition 0 stopped at offset 100: the "
                                      "worker failed: ValueError: boom (3 times")
    assert len(h.pool.running()) == 2  # the other set went on all along
    await h.own.stop()
    await h.ended()
    kinds = [k for k, _ in h.own.summary()["errors"]]
    assert kinds == ["WorkerCrashed", "WorkerCrashed"]


@arun
async def test_names_are_never_used_twice() -> None:
    """d7bfee9: a slot index used again after a scale-down, and restarts, take new names
    (Ray may not have removed the actor that held the old one yet)."""
    h = harness()
    h.begin()
    await h.until("both sets owned", lambda: one_owner_each(h))
    await h.own.rescale(3)
    await h.own.rescale(2)
    await h.own.rescale(3)
    h.pool.die(h.pool.running()[-1])
    await h.until("the restart scheduled", lambda: any(s.restart_at for s in h.own.slots))
    h.clock.now += 100
    await h.until("three sets owned", lambda: one_owner_each(h) and len(h.pool.running()) == 3)
    assert_unique_names(h)
    assert {n.split(":")[-1] for n in h.names()} >= {"w2.0", "w2.1"}  # slot 2 again
    await h.own.stop()
    await h.ended()


class Deciding:
    """An autoscaler that wants 3 workers once."""

    def __init__(self) -> None:
        self.decided = 0

    def due(self) -> bool:
        return self.decided == 0

    def decide(self, report: dict[str, Any], workers: int, owned: set[int]) -> Decision:
        self.decided += 1
        return Decision(3, "scale_up", "lag grows", 3)

    def manual(self, before: int, workers: int) -> None:
        raise AssertionError("not an operator's rescale")

    def state(self) -> dict[str, Any]:
        return {}


@arun
async def test_an_autoscale_decision_is_applied() -> None:
    h = harness(autoscaler=Deciding())
    h.begin()
    await h.until("three sets owned", lambda: one_owner_each(h) and len(h.pool.running()) == 3)
    assert [m["why"] for m in h.own.ledger.moves] == ["scale_up"]
    assert h.own.target == 3 and h.metrics.rescales == 1
    await h.own.stop()
    await h.ended()


@arun
async def test_a_new_worker_that_is_never_placed_moves_nothing() -> None:
    h = harness("topology.place_timeout_s=0.05")
    h.begin()
    await h.until("both sets owned", lambda: one_owner_each(h))
    h.pool.auto_place = False
    with pytest.raises(VeltrixError, match="place_timeout_s"):
        await h.own.rescale(3)
    assert sorted(sorted(w.owned) for w in h.pool.running()) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert h.own.target == 2
    await h.own.stop()
    await h.ended()
