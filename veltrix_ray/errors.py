"""Every error a user can hit derives from VeltrixError and says what to change."""

from __future__ import annotations

from typing import Any


class VeltrixError(Exception):
    """Base class of veltrix-ray's errors."""

    summary: Any = None  # a pipeline run's RunSummary, when the error ended a run


class RetriableError(VeltrixError):
    """A fault that passes by itself (a service away): the worker is restarted, and a
    `forever` run never ends because of one."""


class WorkerCrashed(RetriableError):
    """A worker failed unexpectedly: restarted; the same failure at the same place more than
    topology.max_restarts times within topology.restart_window_s stops those partitions.
    `cause`: the exception's type; `where`: partition -> the first and last offsets of the
    failing batch (attributes, so that they cross Ray with the exception)."""

    def __init__(self, message: str, cause: str = "",
                 where: dict[int, tuple[int, int]] | None = None) -> None:
        super().__init__(message)
        self.cause = cause
        self.where = dict(where or {})


class StackError(VeltrixError):
    """The embedded local stack (Kafka, PostgreSQL) could not be prepared or started."""


class ConfigError(VeltrixError):
    """A configuration value is invalid; the message names the key to change."""


class FencedError(VeltrixError):
    """A worker tried to commit offsets it no longer owns (a newer owner epoch exists)."""


class MemoryBudgetExceeded(VeltrixError):
    """A worker's resident memory went over its configured budget."""


class DeadLetterLimitExceeded(VeltrixError):
    """A partition produced more bad records than the dead-letter policy allows."""


class SinkError(VeltrixError):
    """A permanent PostgreSQL error (not retried)."""


class TransformError(VeltrixError):
    """A transform raised and the pipeline is configured to stop on transform errors."""
