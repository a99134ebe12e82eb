"""A Ray head owned by the local stack: `ray start --head --block` on 127.0.0.1, in its own
session, temp dir and token; local runs attach to it instead of starting a private Ray.

Stopped by signalling its own processes (never `ray stop`, which stops every Ray here)."""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from veltrix_ray.errors import StackError
from veltrix_ray.local import procs

ADDRESS_ENV = "VELTRIX_RAY_ADDRESS"  # what `local env` exports: the head a local run attaches to
MARK_ENV = "VELTRIX_RAY_HEAD"  # set in the head's environment (its workers inherit it)
_CLUSTERS_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Ray's unix sockets live under <temp dir>/session_<40 chars>/sockets/ and must stay < 107 bytes
MAX_TEMP_DIR = 40
OBJECT_STORE_BYTES = 256 * 2**20


def temp_dir_for(home: Path) -> Path:
    """<home>/tmp when short enough, else a short dir under /tmp named after its hash."""
    here = home / "tmp"
    if len(str(here)) <= MAX_TEMP_DIR:
        return here
    digest = hashlib.sha1(str(home).encode()).hexdigest()[:10]
    return Path("/tmp") / f"vxray-{digest}"


@dataclass
class RayHead:
    home: Path  # <state dir>/ray: log, pid, token
    temp_dir: Path
    port: int  # GCS
    num_cpus: int
    metrics_port: int | None = None

    @property
    def address(self) -> str:
        return f"{procs.HOST}:{self.port}"

    @property
    def log(self) -> Path:
        return self.home / "ray-head.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "ray-head.pid"

    @property
    def token_file(self) -> Path:
        return self.home / "auth_token"

    def pid(self) -> int | None:
        return procs.read_pid(self.pid_file)

    def answers(self) -> bool:
        try:
            socket.create_connection((procs.HOST, self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", ADDRESS_ENV)}
        env.update({_CLUSTERS_ENV: "0", "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN_PATH": str(self.token_file), MARK_ENV: str(self.temp_dir),
                    # SIGTERM: no drain of a node about to vanish
                    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"})
        return env

    def start(self, timeout: float = 90.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        if not self.token_file.exists():
            self.token_file.touch(mode=0o600)
            self.token_file.write_text(secrets.token_hex(32))
        ray = Path(sys.executable).parent / "ray"
        cmd = [str(ray) if ray.exists() else "ray", "start", "--head", "--block",
               "--disable-usage-stats", f"--node-ip-address={procs.HOST}", f"--port={self.port}",
               "--include-dashboard=false", f"--dashboard-port={procs.free_port()}",
               f"--dashboard-agent-listen-port={procs.free_port()}",
               f"--ray-client-server-port={procs.free_port()}",
               "--min-worker-port=0", "--max-worker-port=0",
               f"--num-cpus={self.num_cpus}", f"--object-store-memory={OBJECT_STORE_BYTES}",
               f"--temp-dir={self.temp_dir}"]
        if self.metrics_port is not None:
            cmd.append(f"--metrics-export-port={self.metrics_port}")
        self.log.write_bytes(b"")
        pid = procs.spawn(cmd, self.log, cwd=self.home, env=self._env())
        self.pid_file.write_text(str(pid))

        def started() -> bool:
            return "Ray runtime started" in self.log.read_text(errors="replace")

        ready = procs.wait_until(lambda: not procs.pid_alive(pid) or started(), timeout)
        if not procs.pid_alive(pid) or not ready or not self.answers():
            self.stop()
            raise StackError(f"The local Ray head did not start on {self.address} within "
                             f"{timeout:g}s (raise it with --timeout). Last lines of {self.log}:"
                             f"\n{procs.tail(self.log)}")

    def processes(self) -> list[psutil.Process]:
        """This head's processes: its `ray start` and descendants, and anything mentioning its
        temp dir or carrying its mark in the environment (workers detach from the group)."""
        found: dict[int, psutil.Process] = {}
        pid = self.pid()
        if pid is not None:
            try:
                root = psutil.Process(pid)
                found.update({p.pid: p for p in [root, *root.children(recursive=True)]})
            except psutil.NoSuchProcess:
                pass
        found.update({p.pid: p for p in processes_of(self.temp_dir)})
        return list(found.values())

    def stop(self, timeout: float = 20.0) -> None:
        pid = self.pid()
        if pid is not None:
            try:
                os.killpg(pid, signal.SIGTERM)  # `ray start --block` leads its own session
            except ProcessLookupError:
                pass
        # the workers notice their raylet's death by themselves; those left get SIGTERM/SIGKILL
        for sig, wait in ((None, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            left = [p for p in self.processes() if p.pid != os.getpid()]
            if not left:
                break
            for proc in left:
                try:
                    if sig is not None:
                        proc.send_signal(sig)
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(left, timeout=wait)
        if pid is not None:
            try:
                os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
            except ChildProcessError:
                pass
        self.pid_file.unlink(missing_ok=True)


def processes_of(temp_dir: Path) -> list[psutil.Process]:
    """Processes of this user whose command line mentions temp_dir or whose environment
    carries the head's mark."""
    mark, me = str(temp_dir), os.getuid()
    found = []
    for proc in psutil.process_iter(["cmdline", "uids"]):
        try:
            if proc.info["uids"] is None or proc.info["uids"].real != me:
                continue
            if any(mark in arg for arg in proc.info["cmdline"] or ()):
                found.append(proc)
            elif proc.environ().get(MARK_ENV) == mark:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def stack_head() -> tuple[RayHead | None, str | None]:
    """The local stack's head a local run attaches to: the one $VELTRIX_RAY_ADDRESS names, if
    the stack in $VELTRIX_STATE_DIR (or ./.veltrix/local) recorded it and it runs. Returns
    (head, None), (None, why not) or (None, None) when the variable is unset."""
    from veltrix_ray.local.stack import LocalStack

    address = os.environ.get(ADDRESS_ENV)
    if not address:
        return None, None
    stack = LocalStack()
    head = stack.ray_head()
    if head is None or head.address != address:
        return None, (f"{ADDRESS_ENV}={address} is not the Ray head recorded by the local stack "
                      f"in {stack.state_dir}; starting a private Ray (run `eval \"$(veltrix-ray "
                      "local env)\"` again, or unset it)")
    if head.pid() is None or not head.answers():
        return None, (f"the local stack's Ray head at {address} is not running; starting a "
                      "private Ray (`veltrix-ray local up` starts it again)")
    return head, None


@contextmanager
def loopback() -> Iterator[None]:
    """Ray keeps 127.0.0.1 as this driver's address (instead of the host's routable one)."""
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(_CLUSTERS_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ[_CLUSTERS_ENV] = "0"
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved[0]
        if saved[1] is None:
            os.environ.pop(_CLUSTERS_ENV, None)
        else:
            os.environ[_CLUSTERS_ENV] = saved[1]


def use_token(head: RayHead) -> None:
    """This process authenticates to `head` with its token file."""
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(head.token_file))
    try:  # a token cached by an earlier Ray of this process
        from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):
        pass
