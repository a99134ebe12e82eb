"""Pipeline: the driver-side handle (CLI, Python, notebooks) that runs the Coordinator."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import ray
from omegaconf import DictConfig
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from veltrix_ray import errors
from veltrix_ray.check.pipeline import validate
from veltrix_ray.config import load_config, to_settings
from veltrix_ray.config.ray_address import JOIN_FIX, LOCAL, is_local, probe
from veltrix_ray.config.schema import TopologyConfig, VeltrixConfig
from veltrix_ray.local.procs import port_is_free
from veltrix_ray.local.ray_head import RayHead
from veltrix_ray.runtime.coordinator import (
    NAMESPACE,
    Coordinator,
    coordinator_name,
    first_workers,
)
from veltrix_ray.runtime.summary import RunSummary

log = logging.getLogger(__name__)
_CLUSTERS_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_AUTH_MODE_ENV = "RAY_AUTH_MODE"


def init_private_ray(**options: Any) -> bool:
    """A Ray of this process alone, every port of it (GCS, raylet, metrics export) on
    127.0.0.1. Address "local", unlike None, ignores $RAY_ADDRESS and any `ray start` cluster
    found here. Returns whether it is token-protected."""
    from ray._private import ray_constants


    # On Linux Ray takes the node's routable address even for a one-node Ray; with clusters
    # disabled it takes the loopback one (children inherit the environment variable).
    saved = ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(_CLUSTERS_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ[_CLUSTERS_ENV] = "0"
    # Ray protects a new local cluster with a token by default, and warns about it on every
    # start; the caller says so in a line of its own instead
    auth_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    auth_log.addFilter(_token_enabled_notice)
    try:
        ray.init(address=LOCAL, include_dashboard=False, configure_logging=False, **options)
    finally:
        auth_log.removeFilter(_token_enabled_notice)
        ray_constants.ENABLE_RAY_CLUSTER = saved[0]
        if saved[1] is None:
            os.environ.pop(_CLUSTERS_ENV, None)
        else:
            os.environ[_CLUSTERS_ENV] = saved[1]
    return os.environ.get(_AUTH_MODE_ENV, "").lower() == "token"


def _token_enabled_notice(record: logging.LogRecord) -> bool:
    return "is enabled for this Ray cluster" not in record.getMessage()


def _wait_gone(pipeline: str, timeout_s: float = 10.0) -> None:
    """Until no named actor of this pipeline (its Coordinator, its workers) is left."""
    mine = re.compile(rf"{re.escape(coordinator_name(pipeline))}(:w\d+\.\d+)?")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            named = ray.util.list_named_actors(all_namespaces=True)
        except Exception as exc:  # noqa: BLE001 - Ray itself is gone: so are the actors
            log.debug("listing named actors: %s", exc)
            return
        left = sorted(a["name"] for a in named
                      if a["namespace"] == NAMESPACE and mine.fullmatch(a["name"]))
        if not left:
            return
        if time.monotonic() > deadline:
            log.warning("Ray has not removed %s %.0fs after the run ended", ", ".join(left),
                        timeout_s)
            return
        time.sleep(0.05)


def _say(message: str) -> None:
    """Logged; printed to stderr when nothing handles the log (the CLI, a notebook)."""
    if log.hasHandlers():
        log.info(message)
    else:
        print(message, file=sys.stderr, flush=True)


def refuse_metrics_port(head: RayHead, topo: TopologyConfig) -> None:
    """An explicit topology.metrics_port takes effect or stops the run: attached to the local
    stack's head, metrics go where the head exports them, so any other port would stay
    silent while the user believes metrics are on."""
    port = topo.metrics_port
    if port is None or port == head.metrics_port:
        return
    if head.metrics_port:
        fix = (f"exports metrics on 127.0.0.1:{head.metrics_port}, where the stack's Prometheus "
               f"scrapes: set topology.metrics_port={head.metrics_port} (or null)")
    else:
        fix = ("was started without --with-prometheus and exports no metrics: for metrics, "
               "restart the stack with `veltrix-ray local down && veltrix-ray local up "
               "--with-prometheus` and `eval \"$(veltrix-ray local env)\"` (runs then export "
               "where its Prometheus scrapes); for none, set topology.metrics_port=null")
    raise errors.ConfigError(
        f"topology.metrics_port={port} cannot take effect: the run attaches to the local "
        f"stack's Ray head at {head.address}, which {fix}; for a private Ray exporting on "
        f"{port}, unset VELTRIX_RAY_ADDRESS")


def _attach_to_stack(head: RayHead, topo: TopologyConfig) -> None:
    from veltrix_ray.local.ray_head import loopback, use_token

    refuse_metrics_port(head, topo)
    use_token(head)
    try:
        with loopback():
            ray.init(address=head.address, namespace=NAMESPACE, log_to_driver=True,
                     configure_logging=False)
    except Exception as exc:
        raise errors.ConfigError(
            f"could not attach to the local stack's Ray at {head.address} ({type(exc).__name__}"
            f": {exc}); restart it with `veltrix-ray local down && veltrix-ray local up`, or "
            "unset VELTRIX_RAY_ADDRESS for a private Ray") from exc
    _say(f"veltrix-ray: attached to the local stack's Ray at {head.address}")


def ensure_ray(settings: VeltrixConfig, *, probe_first: bool = True) -> None:
    """Attaches to the local stack's Ray head (topology.address null or `local`, and
    $VELTRIX_RAY_ADDRESS names the head the stack recorded), else starts a private Ray, or joins
    the cluster at topology.address; a Ray this process already initialized (a notebook's) is
    used as it is. probe_first: ask the cluster in a child process first (`check` already did),
    so that an address that does not answer fails within topology.join_timeout_s, not after
    minutes."""
    if ray.is_initialized():
        return
    topo = settings.topology
    if is_local(topo.address):
        from veltrix_ray.local.ray_head import stack_head

        head, why_not = stack_head()
        if why_not:
            log.warning(why_not)
        if head is not None:
            _attach_to_stack(head, topo)
            return
        port = topo.metrics_port
        if port is not None and not port_is_free(port):
            raise errors.ConfigError(
                f"topology.metrics_port={port}: 127.0.0.1:{port} is in use (another local run "
                "exporting metrics?). Stop it, or set topology.metrics_port=null (any free "
                "port) or another port.")
        try:
            protected = init_private_ray(namespace=NAMESPACE, log_to_driver=True,
                                         object_store_memory=topo.object_store_mb * 2**20,
                                         _metrics_export_port=topo.metrics_port)
        except Exception as exc:
            raise errors.ConfigError(
                f"could not start a private Ray on this machine (topology.address="
                f"{topo.address or 'null'}): {type(exc).__name__}: {exc}. Lower "
                f"topology.object_store_mb={topo.object_store_mb} if /dev/shm is small, or join "
                "a running cluster with topology.address=auto") from exc
        if protected:
            _say(f"veltrix-ray: started a private Ray on 127.0.0.1 for this run, token-protected "
                 f"({_AUTH_MODE_ENV}=disabled turns that off)")
        return
    assert topo.address is not None
    try:
        if probe_first:
            probe(topo.address, topo.join_timeout_s)
        ray.init(address=topo.address, namespace=NAMESPACE, log_to_driver=True)
    except Exception as exc:
        raise errors.ConfigError(
            f"cannot join Ray at topology.address={topo.address} ({type(exc).__name__}: "
            f"{exc}): {JOIN_FIX}") from exc


class Pipeline:
    """`Pipeline(load_config([...])).run()` processes the topic into PostgreSQL exactly once."""

    def __init__(self, cfg: DictConfig | VeltrixConfig | None = None, *,
                 overrides: Sequence[str] = ()) -> None:
        if cfg is None:
            cfg = load_config(overrides)
        self.settings = to_settings(cfg) if isinstance(cfg, DictConfig) else cfg
        from veltrix_ray.runtime.schemas import resolve_columns
        resolve_columns(self.settings)  # avro/protobuf without pipeline.columns: the registry's
        validate(self.settings)
        self._coordinator: Any = None

    @property
    def name(self) -> str:
        return coordinator_name(self.settings.pipeline.name)

    def run(self, *, on_progress: Callable[[RunSummary], None] | None = None,
            raise_on_error: bool = True) -> RunSummary:
        ensure_ray(self.settings)
        try:
            # on the driver's node: losing a worker node never takes the run's bookkeeping along
            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                                  soft=False)
            coord: Any = ray.remote(Coordinator).options(
                name=self.name, namespace=NAMESPACE, num_cpus=0, max_concurrency=16,
                scheduling_strategy=here,
            ).remote(self.settings)
        except ValueError as exc:
            raise errors.ConfigError(
                f"pipeline {self.settings.pipeline.name!r} is already running on this Ray "
                f"cluster (actor {self.name}); stop it first or set another pipeline.name."
            ) from exc
        first: list[Any] = []
        try:
            # created here, not by the Coordinator once it runs: their processes start now
            first = first_workers(self.settings)
            ref = coord.run.remote(first)
            self._coordinator = coord  # rescale and stop from now on
            while True:
                try:
                    ready, _ = ray.wait([ref], timeout=self.settings.progress_interval_s)
                    if ready:
                        break
                    if on_progress is not None:
                        on_progress(RunSummary.from_report(ray.get(coord.progress.remote())))
                except KeyboardInterrupt:
                    log.warning("stopping: finishing the batches in flight")
                    self.stop()
            try:
                summary = RunSummary.from_report(ray.get(ref))
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause
                if isinstance(cause, errors.VeltrixError):
                    raise type(cause)(str(cause)) from None
                raise
        finally:
            for actor in [coord, *first]:  # the driver owns the first workers
                if actor is not None:
                    ray.kill(actor)
            self._coordinator = None
            # Ray removes the Coordinator's workers after it (they share its fate): a run
            # started right after this one must find their names free
            _wait_gone(self.settings.pipeline.name)
        if raise_on_error and summary.errors:
            kind, _ = summary.errors[0]
            exc_type = getattr(errors, kind, errors.VeltrixError)
            error = exc_type("\n".join(m for _, m in summary.errors))
            error.summary = summary
            raise error
        return summary

    def rescale(self, workers: int) -> dict[str, object]:
        """Change the number of workers of the running pipeline, moving few partitions.
        Returns {"workers", "moved", "sets"}."""
        if self._coordinator is None:
            raise errors.VeltrixError("the pipeline is not running; set topology.workers "
                                      "and run it")
        try:
            return dict(ray.get(self._coordinator.rescale.remote(workers)))
        except ray.exceptions.RayActorError as exc:
            raise errors.VeltrixError(
                f"the pipeline {self.settings.pipeline.name!r} ended before the rescale to "
                f"{workers} workers finished; its run() says why") from exc

    def stop(self) -> None:
        """Graceful stop: each worker finishes and commits its batch in flight, then exits."""
        if self._coordinator is not None:
            self._coordinator.stop.remote()
