"""The `veltrix-ray` command: local stack, synthetic producer, config, check, run, and the
operator verbs for a running pipeline (status, rescale, stop, reset-offsets)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from veltrix_ray.errors import VeltrixError


def _local(args: argparse.Namespace) -> int:
    from veltrix_ray.local import LocalStack

    stack = LocalStack(Path(args.state_dir) if args.state_dir else None)
    if args.action == "up":
        status = stack.up(kafka_port=args.kafka_port, postgres_port=args.postgres_port,
                          registry_port=args.registry_port, timeout=args.timeout,
                          with_prometheus=args.with_prometheus,
                          prometheus_port=args.prometheus_port, metrics_port=args.metrics_port,
                          with_ray=not args.no_ray)
        print(f"kafka     {status.bootstrap}  (pid {status.kafka_pid})")
        print(f"postgres  {status.dsn}  (pid {status.postgres_pid})")
        print(f"schema_registry {status.registry_url}  (pid {status.registry_pid})")
        if status.prometheus_url:
            print(f"prometheus {status.prometheus_url}  (pid {status.prometheus_pid}), scraping "
                  f"local runs' metrics on 127.0.0.1:{status.metrics_port} "
                  "(topology.metrics_port)")
        if status.ray_address:
            print(f"ray       {status.ray_address}  (pid {status.ray_pid}), local runs attach to "
                  "it")
        print(f"state     {stack.state_dir}")
        print('use it:   eval "$(veltrix-ray local env)"')
    elif args.action == "down":
        stack.down(wipe=args.wipe)
        wiped = " and wiped it" if args.wipe else ""
        print(f"stopped the local stack in {stack.state_dir}{wiped}")
    elif args.action == "status":
        status = stack.status()
        services = [("kafka", status.kafka_pid, status.bootstrap),
                    ("postgres", status.postgres_pid, status.dsn),
                    ("schema_registry", status.registry_pid, status.registry_url)]
        if status.prometheus_pid:
            services.append(("prometheus", status.prometheus_pid, status.prometheus_url))
        if status.ray_pid:
            services.append(("ray", status.ray_pid, status.ray_address))
        for name, pid, where in services:
            state = f"running (pid {pid})" if pid else "stopped"
            print(f"{name:15} {state:22} {where or ''}")
        return 0 if status.running else 3
    elif args.action == "env":
        for key, value in stack.env().items():
            print(f"export {key}={value}")
    return 0


def _config_show(args: argparse.Namespace) -> int:
    from veltrix_ray.config import load_config
    from veltrix_ray.config.mask import masked_yaml

    print(masked_yaml(load_config(args.overrides)), end="")
    return 0


def _check(args: argparse.Namespace) -> int:
    from veltrix_ray.check import run_checks
    from veltrix_ray.config import load_config, to_settings

    findings = run_checks(to_settings(load_config(args.overrides)))
    for finding in findings:
        print(finding)
    return 1 if any(f.level == "error" for f in findings) else 0


def _run(args: argparse.Namespace) -> int:
    import signal

    from veltrix_ray.check import run_checks
    from veltrix_ray.config import load_config, to_settings
    from veltrix_ray.runtime import Pipeline, RunSummary
    from veltrix_ray.runtime.pipeline import ensure_ray

    settings = to_settings(load_config(args.overrides))
    if not args.skip_checks:
        findings = run_checks(settings)
        problems = [f for f in findings if f.level != "ok"]
        for finding in problems:
            print(finding, file=sys.stderr)
        if any(f.level == "error" for f in problems):
            print("error: the config does not fit reality (see above); fix the keys named, or "
                  "run `veltrix-ray check` for the full report.", file=sys.stderr)
            return 1
    pipeline = Pipeline(settings)
    ensure_ray(settings, probe_first=args.skip_checks)  # the checks asked the cluster already
    # after ray.init, which installs its own SIGTERM handler: SIGTERM stops like Ctrl-C does
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    live = sys.stderr.isatty()

    def show(progress: RunSummary) -> None:
        line = progress.line()
        print(("\r" + line) if live else line, end="" if live else "\n", file=sys.stderr,
              flush=True)

    summary = pipeline.run(on_progress=show, raise_on_error=False)
    if live:
        print(file=sys.stderr)
    print(summary.table())
    return 0 if summary.ok else 1


def _settings(overrides: list[str]) -> Any:
    from veltrix_ray.config import load_config, to_settings

    return to_settings(load_config(overrides))


def _which(settings: Any) -> str:
    return f"pipeline {settings.pipeline.name!r} (topic {settings.kafka.topic!r})"


def _status(args: argparse.Namespace) -> int:
    import json

    from veltrix_ray.control.status import collect, render

    status = collect(_settings(args.overrides))
    print(json.dumps(status) if args.json else render(status))
    return 0 if status["running"] else 3


def _wait_row(plane: Any, done: Any, timeout: float) -> Any:
    """Poll the control row until `done(row)`; None after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        row = plane.read()
        if done(row):
            return row
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


def _rescale(args: argparse.Namespace) -> int:
    from veltrix_ray.control.plane import ControlPlane, running

    settings = _settings(args.overrides)
    if args.workers < 1:
        print("error: rescale needs at least 1 worker", file=sys.stderr)
        return 1
    plane = ControlPlane(settings, max_elapsed_s=10.0, application_name="veltrix-ray rescale")
    if not running(plane.read()):
        print(f"error: {_which(settings)} is not running, so there is nothing to rescale; "
              f"start it with topology.workers={args.workers} instead.", file=sys.stderr)
        return 1
    request = plane.request_rescale(args.workers)
    row = _wait_row(plane, lambda r: r is None or r.applied_request_id >= (request or 0)
                    or not running(r), args.timeout)
    if row is None:
        print(f"error: rescale requested (request {request}) but not applied within "
              f"{args.timeout:g}s; the coordinator may still be moving partitions: see "
              "`veltrix-ray status`.", file=sys.stderr)
        return 2
    outcome = row.status.get("applied") or {}
    if outcome.get("request_id") != request:
        why = "it stopped" if not running(row) else "a later request replaced it"
        print(f"error: the rescale (request {request}) was not applied: {why}.",
              file=sys.stderr)
        return 1
    if outcome.get("error"):
        print(f"error: the rescale failed: {outcome['error']}", file=sys.stderr)
        return 1
    print(f"rescaled {_which(settings)} to {outcome['workers']} workers, "
          f"{outcome['moved']} partition(s) moved")
    for i, partitions in enumerate(outcome["sets"]):
        print(f"  set {i}: partitions {partitions}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    from veltrix_ray.control.plane import ControlPlane, running

    settings = _settings(args.overrides)
    plane = ControlPlane(settings, max_elapsed_s=10.0, application_name="veltrix-ray stop")
    if not running(plane.read()):
        print(f"{_which(settings)} is not running")
        return 0
    request = plane.request_stop()
    print(f"stop requested (request {request}): the workers commit their batches in flight",
          file=sys.stderr)
    row = _wait_row(plane, lambda r: not running(r), args.timeout)
    if row is None:
        print(f"error: {_which(settings)} still runs {args.timeout:g}s after the stop "
              "request; see `veltrix-ray status`.", file=sys.stderr)
        return 2
    print(f"{_which(settings)} stopped")
    return 0


def _reset_offsets(args: argparse.Namespace) -> int:
    import asyncio

    from veltrix_ray.control.kafka import offsets_at
    from veltrix_ray.control.reset import apply, parse_target

    target = parse_target(args.to)
    settings = _settings(args.overrides)
    wheres = ["earliest", "latest"] + ([target.where] if target.where else [])
    count, found = asyncio.run(offsets_at(settings.kafka, wheres))
    resolved = found[2] if target.where else {}
    changes = apply(settings, target, count, resolved, found[0], found[1],
                    dry_run=args.dry_run)
    changed = sum(1 for c in changes if c.changed)
    print(f"{_which(settings)}: offsets to {args.to}"
          + (" (dry run: nothing changed)" if args.dry_run else ""))
    for change in changes:
        print("  " + change.line())
    print(f"{changed} partition(s) {'would change' if args.dry_run else 'changed'}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from veltrix_ray import produce
    from veltrix_ray.local import LocalStack

    stack = LocalStack()
    status = stack.up()
    print(f"local stack: kafka {status.bootstrap}, postgres {status.dsn}")
    os.environ.update(stack.env())
    assert status.bootstrap is not None
    report = asyncio.run(produce.produce(status.bootstrap, args.topic, events=args.events,
                                         partitions=8, seed=args.seed,
                                         bad_fraction=args.bad_fraction,
                                         progress=sys.stderr.isatty()))
    print(report.summary())
    return _run(argparse.Namespace(overrides=[f"kafka.topic={args.topic}", "until=drained",
                                              *args.overrides], skip_checks=False))


def _parser() -> argparse.ArgumentParser:
    from veltrix_ray import produce

    parser = argparse.ArgumentParser(prog="veltrix-ray", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    local = sub.add_parser("local", help="the embedded local stack (Kafka KRaft + PostgreSQL"
                           " + a schema registry + a Ray head, optionally Prometheus)")
    local.add_argument("action", choices=["up", "down", "status", "env"])
    local.add_argument("--state-dir", help="default: $VELTRIX_STATE_DIR or ./.veltrix/local")
    local.add_argument("--kafka-port", type=int, help="default 19092, or any free port")
    local.add_argument("--postgres-port", type=int, help="default 15432, or any free port")
    local.add_argument("--registry-port", type=int,
                       help="the schema registry's (Apicurio): default 18081, or any free port")
    local.add_argument("--timeout", type=float, default=90.0,
                       help="seconds to wait for each service to become ready")
    local.add_argument("--wipe", action="store_true", help="down: also delete data and logs")
    local.add_argument("--with-prometheus", action="store_true",
                       help="up: also a Prometheus on 127.0.0.1 scraping local runs' metrics")
    local.add_argument("--prometheus-port", type=int, help="default 19090, or any free port")
    local.add_argument("--no-ray", action="store_true",
                       help="up: no Ray head (local runs then start a private Ray each)")
    local.add_argument("--metrics-port", type=int,
                       help="the Ray metrics port Prometheus scrapes (default 19100); `local "
                            "env` exports it as VELTRIX_METRICS_PORT for topology.metrics_port")
    local.set_defaults(func=_local)

    prod = sub.add_parser("produce", help="write synthetic standard events to a topic")
    produce.add_arguments(prod)
    prod.set_defaults(func=produce.run_cli)

    overrides_help = "Hydra overrides, e.g. pipeline=user_totals topology.workers=4"
    run = sub.add_parser("run", help="run a pipeline (checks the config against reality first)")
    run.add_argument("overrides", nargs="*", help=overrides_help)
    run.add_argument("--skip-checks", action="store_true")
    run.set_defaults(func=_run)

    check = sub.add_parser("check", help="validate a config against Kafka, PostgreSQL and Ray")
    check.add_argument("overrides", nargs="*", help=overrides_help)
    check.set_defaults(func=_check)

    config = sub.add_parser("config", help="show the resolved config (secrets masked)")
    config.add_argument("action", choices=["show"])
    config.add_argument("overrides", nargs="*", help=overrides_help)
    config.set_defaults(func=_config_show)

    demo = sub.add_parser("demo", help="local stack + synthetic events + the events pipeline")
    demo.add_argument("--events", type=int, default=200_000)
    demo.add_argument("--bad-fraction", type=float, default=0.002)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--topic", default="demo-events")
    demo.add_argument("overrides", nargs="*", help=overrides_help)
    demo.set_defaults(func=_demo)

    status = sub.add_parser("status", help="a pipeline's partitions, workers and lag (running "
                            "or not); exit 3 when it is not running")
    status.add_argument("overrides", nargs="*", help=overrides_help)
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.set_defaults(func=_status)

    rescale = sub.add_parser("rescale", help="change the worker count of a running pipeline")
    rescale.add_argument("workers", type=int)
    rescale.add_argument("overrides", nargs="*", help=overrides_help)
    rescale.add_argument("--timeout", type=float, default=60.0,
                         help="seconds to wait for the coordinator to apply it")
    rescale.set_defaults(func=_rescale)

    stop = sub.add_parser("stop", help="stop a running pipeline gracefully (batches in flight "
                          "commit)")
    stop.add_argument("overrides", nargs="*", help=overrides_help)
    stop.add_argument("--timeout", type=float, default=120.0,
                      help="seconds to wait until it has stopped")
    stop.set_defaults(func=_stop)

    reset = sub.add_parser("reset-offsets", help="move a stopped pipeline's stored offsets")
    reset.add_argument("--to", required=True,
                       help="earliest | latest | an ISO-8601 timestamp with zone | "
                            "partition:offset,... (e.g. 0:1200,3:0)")
    reset.add_argument("--dry-run", action="store_true", help="print, change nothing")
    reset.add_argument("overrides", nargs="*", help=overrides_help)
    reset.set_defaults(func=_reset_offsets)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except VeltrixError as exc:
        from veltrix_ray.config.mask import mask_text

        print(f"error: {mask_text(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
