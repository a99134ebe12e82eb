"""While the broker is away, aiokafka logs every failed connection and fetch, hundreds of lines
within seconds. Folded into one line of ours per wait (what is waited for, and the fix) and
one when records arrive again, as PostgreSQL waits are (sink/connection.py)."""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)

# aiokafka's loggers, and the format strings of their lines that mean "the broker cannot be
# reached" (a record's unformatted `msg`: stable across the values it is formatted with)
AIOKAFKA_LOGGERS = ("aiokafka.client", "aiokafka.conn", "aiokafka.consumer.fetcher")
UNREACHABLE = frozenset({
    'Unable connect to "%s:%s": %s',
    "Unable connect to node with id %s: %s",
    "Unable to update metadata from %s",
    "Failed fetch messages from %s: %s",
    "Failed fetch offsets from %s: %s",
})


class BrokerWait(logging.Filter):
    """Installed on aiokafka's loggers once per process (a worker's or the coordinator's)."""

    def __init__(self, who: str, bootstrap: str) -> None:
        super().__init__()
        self.who = who
        self.bootstrap = bootstrap
        self.since: float | None = None  # monotonic: when the current wait began
        self.folded = 0  # aiokafka's lines folded into the current wait's

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg not in UNREACHABLE:
            return True
        if self.since is None:
            self.since = time.monotonic()
            self.folded = 0
            log.warning("%s: the Kafka broker cannot be reached (aiokafka: %s); waiting for it, "
                        "retrying. Fix: check that kafka.bootstrap=%s is up and reachable from "
                        "this node", self.who, record.getMessage(), self.bootstrap)
        self.folded += 1
        return False

    def answered(self) -> None:
        """Records arrived: the wait, if any, is over."""
        if self.since is not None:
            log.warning("%s: the Kafka broker answers again after %.0fs (%d connection errors "
                        "of aiokafka folded)", self.who, time.monotonic() - self.since,
                        self.folded)
            self.since = None


_installed: BrokerWait | None = None


def broker_wait(who: str, bootstrap: str) -> BrokerWait:
    """This process's BrokerWait, installed on aiokafka's loggers at the first call."""
    global _installed
    if _installed is None:
        _installed = BrokerWait(who, bootstrap)
        for name in AIOKAFKA_LOGGERS:
            logging.getLogger(name).addFilter(_installed)
    return _installed
