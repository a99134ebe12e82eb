"""aiokafka's connection errors while the broker is away: one line of ours per wait."""

from __future__ import annotations

import logging

import pytest

from veltrix_ray.source.waits import BrokerWait


def test_a_wait_is_one_line_then_one_when_records_arrive(
        caplog: pytest.LogCaptureFixture) -> None:
    aiokafka = logging.getLogger("aiokafka.client")
    wait = BrokerWait("events:w0.0", "127.0.0.1:9092")
    earlier, aiokafka.filters = aiokafka.filters, [wait]  # only this wait's lines
    try:
        # the logger's own level too: the local stack's readiness probe quiets "aiokafka"
        with caplog.at_level(logging.DEBUG, logger="aiokafka"):
            for _ in range(195):
                aiokafka.error("Unable connect to node with id %s: %s", 1,
                               "[Errno 111] Connect call failed")
            aiokafka.error("Unable to update metadata from %s", [1])
            aiokafka.warning("something else")
            wait.answered()
            wait.answered()  # no wait: nothing to say
    finally:
        aiokafka.filters = earlier
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert lines[0].startswith("events:w0.0: the Kafka broker cannot be reached (aiokafka: "
                               "Unable connect to node with id 1: [Errno 111]")
    assert "kafka.bootstrap=127.0.0.1:9092" in lines[0]
    assert lines[1] == "something else"
    assert "answers again" in lines[2] and "196 connection errors" in lines[2]
