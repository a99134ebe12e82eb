"""The `veltrix-ray` command: local stack, synthetic producer, config, check, run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from veltrix_ray.errors import VeltrixError


def _local(args: argparse.Namespace) -> int:
    from veltrix_ray.local import LocalStack

    stack = LocalStack(Path(args.state_dir) if args.state_dir else None)
    if args.action == "up":
        status = stack.up(kafka_port=args.kafka_port, postgres_port=args.postgres_port,
                          timeout=args.timeout)
        print(f"kafka     {status.bootstrap}  (pid {status.kafka_pid})")
        print(f"postgres  {status.dsn}  (pid {status.postgres_pid})")
        print(f"state     {stack.state_dir}")
        print('use it:   eval "$(veltrix-ray local env)"')
    elif args.action == "down":
        stack.down(wipe=args.wipe)
        print(f"stopped the local stack in {stack.state_dir}" + (" and wiped it" if args.wipe else ""))
    elif args.action == "status":
        status = stack.status()
        for name, pid, where in (("kafka", status.kafka_pid, status.bootstrap),
                                 ("postgres", status.postgres_pid, status.dsn)):
            state = f"running (pid {pid})" if pid else "stopped"
            print(f"{name:9} {state:22} {where or ''}")
        return 0 if status.running else 3
    elif args.action == "env":
        for key, value in stack.env().items():
            print(f"export {key}={value}")
    return 0


def _parser() -> argparse.ArgumentParser:
    from veltrix_ray import produce

    parser = argparse.ArgumentParser(prog="veltrix-ray", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    local = sub.add_parser("local", help="the embedded local stack (Kafka KRaft + PostgreSQL)")
    local.add_argument("action", choices=["up", "down", "status", "env"])
    local.add_argument("--state-dir", help="default: $VELTRIX_STATE_DIR or ./.veltrix/local")
    local.add_argument("--kafka-port", type=int, help="default 19092, or any free port")
    local.add_argument("--postgres-port", type=int, help="default 15432, or any free port")
    local.add_argument("--timeout", type=float, default=90.0,
                       help="seconds to wait for each service to become ready")
    local.add_argument("--wipe", action="store_true", help="down: also delete data and logs")
    local.set_defaults(func=_local)

    prod = sub.add_parser("produce", help="write synthetic standard events to a topic")
    produce.add_arguments(prod)
    prod.set_defaults(func=produce.run_cli)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except VeltrixError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
