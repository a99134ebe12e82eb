"""Process, port and PID-file helpers shared by the local Kafka and PostgreSQL."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

from veltrix_ray.errors import StackError

HOST = "127.0.0.1"


def port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def choose_port(requested: int | None, default: int, flag: str, service: str) -> int:
    """An explicitly requested port must be free; the default falls back to any free port."""
    if requested is not None:
        if not port_is_free(requested):
            raise StackError(
                f"{service}: port {HOST}:{requested} is already in use. "
                f"Stop whatever listens there, or pass another port with {flag} "
                f"(or omit {flag} to let veltrix-ray pick a free one)."
            )
        return requested
    return default if port_is_free(default) else free_port()


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return f"(no log at {path})"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def spawn(cmd: Sequence[str], log: Path, *, cwd: Path, env: dict[str, str] | None = None,
          user: str | None = None) -> int:
    """Start a daemon in its own session (so Ctrl-C of the CLI does not kill it)."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(cmd), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=cwd, env=env, start_new_session=True, **as_user(user),
        )
    return proc.pid


def as_user(user: str | None) -> dict[str, Any]:
    """subprocess arguments that drop to `user` entirely (uid, gid and no root groups)."""
    if user is None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def read_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def pid_alive(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def stop_pid(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM, wait, then SIGKILL: the process and only that process (and its children)."""
    try:
        proc = psutil.Process(pid)
        children = proc.children(recursive=True)
        proc.send_signal(signal.SIGTERM)
    except psutil.NoSuchProcess:
        return
    _, alive = psutil.wait_procs([proc], timeout=timeout)
    for p in alive + children:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(children, timeout=5)
    # reap it if it is our child (the CLI process that started it may still be alive)
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
