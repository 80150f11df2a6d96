"""The ``durable`` command: look at and manage workflows from a shell.

::

    durable [--dsn URL] [--schema NAME] [--json] COMMAND [ARGS]

Commands: ``migrate``, ``list``, ``show NAME [--child NAME]...``, ``cancel
NAME [--child NAME]...``, ``resume NAME``, ``queues``, ``worker module:object``, ``gc --older-than 30d``,
``ui`` (a local web view, with the ``ui`` extra).
Tables for people by default, ``--json`` for scripts. The database is
``--dsn``, else what ``durable.init()`` connects to without a URL
(``$DURABLE_DATABASE_URL``, the ``PG*`` variables, the embedded Postgres).
These options (``--dsn``, ``--schema``, ``--connect-timeout``, ``--json``)
go before or after the command; given in both places, the one after wins.

Exit codes: 0 done; 1 the operation failed or found nothing (an unknown
name, a finished workflow to cancel); 2 a usage error; 3 the database
cannot be used (a bad or unreachable DSN, a refused login, a bad schema
name, a schema that is missing or not migrated, or one of a newer durable).
Errors are one line on stderr.

Only ``migrate`` and ``worker`` create or migrate the schema; the other
commands refuse a schema that is missing or out of date.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

import click

from . import _cli_render as render
from . import _core
from ._db import Db, init
from ._cli_worker import CannotLoad, NotAWorker, Workflows, configure_logging, load, serve
from ._db import cancel as cancel_workflow
from ._fork import fork as fork_workflow
from ._gc import MAX_AGE
from ._gc import gc as collect
from ._core import STATUSES
from ._info import get, list_workflows, tree
from ._names import check as check_name
from ._names import text
from ._queues import list_queues
from ._runs import resume as resume_workflow
from .errors import ConfigError, DatabaseError, DurableError, InvalidName, SchemaTooNew

T = TypeVar("T")
C = TypeVar("C", bound=Callable[..., Any])

#: The operation failed or found nothing.
EXIT_FAILED = 1
#: A usage error: an unknown option, a bad value.
EXIT_USAGE = 2
#: The database cannot be used: bad DSN, unreachable, login refused, schema
#: missing, not migrated or too new.
EXIT_NO_DATABASE = 3


class Failed(click.ClickException):
    exit_code = EXIT_FAILED


class NoDatabase(click.ClickException):
    exit_code = EXIT_NO_DATABASE


class Misused(click.ClickException):
    """A usage error on one line, as every other error: click's message and
    where the help is (click prints the usage and a hint on lines of their own)."""

    exit_code = EXIT_USAGE


def one_line(exc: click.UsageError) -> click.ClickException:
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):  # the help itself, asked for without arguments
        return exc
    where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
    return Misused(exc.format_message() + where)


class Commands(click.Group):
    """The ``durable`` group: its usage errors, and its commands', are one line."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            raise one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise one_line(exc) from None


@dataclass
class Settings:
    """The global options."""

    dsn: str | None
    schema: str
    json: bool
    connect_timeout: float

    async def connect(self, *, migrate: bool = False, max_connections: int = 2) -> Db:
        """``durable.init`` with these options; what keeps it from connecting
        is ``NoDatabase`` (its messages never hold the password). Without
        ``migrate``, a schema that is missing or out of date is refused, not
        created: a mistyped ``--schema`` must not make a new one."""
        try:
            return await init(
                self.dsn,
                schema=self.schema,
                max_connections=max_connections,
                connect_timeout=self.connect_timeout,
                migrate=migrate,
            )
        except (ConfigError, DatabaseError, SchemaTooNew) as exc:
            raise NoDatabase(str(exc)) from None

    def run(self, work: Callable[[Db], Awaitable[T]], *, migrate: bool = False) -> T:
        """Connects, runs ``work``, closes; a durable error is ``Failed``."""

        async def connected() -> T:
            db = await self.connect(migrate=migrate)
            try:
                return await work(db)
            finally:
                await db.close()

        try:
            return asyncio.run(connected())
        except DurableError as exc:
            raise Failed(str(exc)) from None

    def print(self, value: Any, text: Callable[[], str]) -> None:
        """``value`` as JSON with ``--json``, else ``text()``."""
        if self.json:
            click.echo(json.dumps(render.jsonable(value), indent=2, ensure_ascii=False))
        else:
            click.echo(text())


class Seconds(click.FloatRange):
    """A number of seconds within the range; NaN too is refused (it
    compares false with every bound, so a range alone lets it through)."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        return number


class Name(click.types.StringParamType):
    """A workflow's, step's or queue's name, checked as the API checks it
    (not empty, at most 255 bytes, no NUL, text that UTF-8 can encode: the
    shell hands over bytes that are not UTF-8 as lone surrogates), so that
    a bad one is a usage error, found before connecting."""

    name = "name"

    def __init__(self, what: str) -> None:
        self.what = what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return check_name(self.what, value)
        except InvalidName as exc:
            self.fail(str(exc), param, ctx)


class Text(click.types.StringParamType):
    """A filter's text, checked as the API checks it (no NUL, text that
    UTF-8 can encode): a bad one is a usage error."""

    name = "text"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        what = param.name if param is not None and param.name is not None else "value"
        try:
            return text(what, value)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


DSN_HELP = (
    "Database URL (postgresql://user:password@host:5432/db). Default: $DURABLE_DATABASE_URL, "
    "else the PG* variables if $PGHOST or $PGDATABASE is set, else the embedded Postgres."
)
SCHEMA_HELP = "Schema of durable's tables."
JSON_HELP = "Print JSON, for scripts."
TIMEOUT_HELP = "Longest wait for a connection."
CONNECT_TIMEOUT = Seconds(0, 3600, min_open=True)


def _given(field: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    """The callback of an option given after the command: it sets the
    ``Settings`` field that the option before the command sets."""

    def set_field(ctx: click.Context, _: click.Parameter, value: Any) -> None:
        # The group's callback made the Settings before the command's options are parsed.
        settings = ctx.find_object(Settings)
        if value is not None and value is not False and settings is not None:
            setattr(settings, field, value)

    return set_field


def connection_options(*, json_flag: bool = True) -> Callable[[C], C]:
    """The options of the group after the command too, as users type them
    (``durable list --dsn URL --json``); given in both places, the one
    after the command wins."""
    options = [
        click.option("--dsn", metavar="URL", expose_value=False, callback=_given("dsn"), help=DSN_HELP),
        click.option("--schema", metavar="NAME", expose_value=False, callback=_given("schema"), help=SCHEMA_HELP),
        click.option(
            "--connect-timeout",
            type=CONNECT_TIMEOUT,
            metavar="SECONDS",
            expose_value=False,
            callback=_given("connect_timeout"),
            help=TIMEOUT_HELP,
        ),
    ]
    if json_flag:
        options.append(click.option("--json", is_flag=True, expose_value=False, callback=_given("json"), help=JSON_HELP))

    def add(command: C) -> C:
        for option in reversed(options):
            command = option(command)
        return command

    return add


def _now() -> datetime:
    return datetime.now(timezone.utc)


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dsn", metavar="URL", help=DSN_HELP)
@click.option("--schema", metavar="NAME", default="durable", show_default=True, help=SCHEMA_HELP)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.option(
    "--connect-timeout", type=CONNECT_TIMEOUT, default=10.0, show_default=True, metavar="SECONDS", help=TIMEOUT_HELP
)
@click.pass_context
def cli(ctx: click.Context, dsn: str | None, schema: str, as_json: bool, connect_timeout: float) -> None:
    """Look at and manage durable workflows.

    Exit codes: 0 done, 1 failed or not found, 2 usage error, 3 the database
    cannot be used (bad DSN, unreachable, login refused, schema missing or
    not migrated: run `durable migrate`).

    --dsn, --schema, --connect-timeout and --json go before or after the
    command (after it, they win).
    """
    ctx.obj = Settings(dsn=dsn, schema=schema, json=as_json, connect_timeout=connect_timeout)


@cli.command()
@connection_options()
@click.pass_obj
def migrate(settings: Settings) -> None:
    """Create or update durable's tables, and print the schema version."""

    async def work(db: Db) -> int:
        return db._engine.migrated_from

    before = settings.run(work, migrate=True)
    version = _core.SCHEMA_VERSION
    result = {"schema": settings.schema, "version": version, "previous_version": before}
    if before == version:
        message = f"schema {settings.schema!r} is up to date at version {version}"
    elif before == 0:
        message = f"created schema {settings.schema!r} at version {version}"
    else:
        message = f"migrated schema {settings.schema!r} from version {before} to {version}"
    settings.print(result, lambda: message)


@cli.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="Only workflows in this status.")
@click.option("--queue", type=Text(), help="Only runs of this queue.")
@click.option(
    "--prefix", "--name-prefix", "name_prefix", type=Text(), metavar="TEXT", help="Only names that start with TEXT."
)
@click.option(
    "--since", metavar="WHEN", help="Only those created since: a duration back (30d, 12h, 15m) or an ISO datetime."
)
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True, help="At most this many.")
@connection_options()
@click.pass_obj
def list_command(
    settings: Settings, status: str | None, queue: str | None, name_prefix: str | None, since: str | None, limit: int
) -> None:
    """List root workflows, newest first."""
    now = _now()
    try:
        after = None if since is None else render.parse_moment(since, now)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    runs = settings.run(
        lambda db: list_workflows(db, status=status, queue=queue, name_prefix=name_prefix, since=after, limit=limit)
    )
    settings.print(runs, lambda: render.workflows_table(runs, now) if runs else "no workflows")


#: ``--child NAME``, repeated: a child workflow by its path under the root NAME.
child_option = click.option(
    "--child",
    "children",
    type=Name("child workflow"),
    metavar="NAME",
    multiple=True,
    help="A child workflow of NAME, by its own name; repeat it for a child of that child. "
    "NAME is always one name, / and all.",
)


def _path(name: str, children: tuple[str, ...]) -> tuple[str, ...]:
    """The workflow a command names: the root ``name`` (never split), then
    the ``--child`` names, in order."""
    return (name, *children)


def _label(path: tuple[str, ...]) -> str:
    """A workflow in a message: a root by its name, a child by its path."""
    return repr(path[0]) if len(path) == 1 else repr(path)


@cli.command()
@click.argument("name", type=Name("workflow"))
@connection_options()
@child_option
@click.pass_obj
def show(settings: Settings, name: str, children: tuple[str, ...]) -> None:
    """Show the root workflow NAME (a child of it with --child) with its
    steps and children: status, attempts, durations, errors and tracebacks."""
    path = _path(name, children)
    found = settings.run(lambda db: tree(db, path))
    settings.print(found, lambda: render.tree_text(found, _now()))


@cli.command()
@click.argument("name", type=Name("workflow"))
@connection_options()
@child_option
@click.option(
    "--children/--no-children",
    "with_children",
    default=True,
    show_default=True,
    help="Cancel the unfinished workflows under it too (--no-children: a running child goes on to its end).",
)
@click.option("--enqueued", is_flag=True, help="Cancel the runs its workflows enqueued too.")
@click.pass_obj
def cancel(settings: Settings, name: str, children: tuple[str, ...], with_children: bool, enqueued: bool) -> None:
    """Cancel the root workflow NAME (a child of it with --child) and the
    unfinished workflows under it.

    Exits 1 if there is no such workflow or it already finished."""
    path = _path(name, children)

    async def work(db: Db) -> None:
        if await cancel_workflow(db, path, children=with_children, enqueued=enqueued):
            return
        # Nothing cancelled: an unknown workflow (WorkflowNotFound), or one that finished.
        status = (await get(db, path)).status
        raise Failed(f"workflow {_label(path)} is already {status}: nothing to cancel")

    settings.run(work)
    reached = ["its unfinished children"] if with_children else []
    reached += ["the runs it enqueued"] if enqueued else []
    message = f"cancelled workflow {_label(path)}" + (f" and {' and '.join(reached)}" if reached else " alone")
    settings.print({"name": path[-1], "path": list(path), "cancelled": True}, lambda: message)


@cli.command()
@click.argument("name", type=Name("workflow"))
@connection_options()
@click.pass_obj
def resume(settings: Settings, name: str) -> None:
    """Put a failed or cancelled root workflow back to run, keeping its
    completed steps. Exits 1 if there is no such workflow or it is neither
    failed nor cancelled."""

    async def work(db: Db) -> str:
        resumed = await resume_workflow(db, name)
        status = (await get(db, name)).status  # WorkflowNotFound for an unknown name
        if not resumed:
            raise Failed(f"workflow {name!r} is {status}: only a failed or cancelled workflow can be resumed")
        return status

    status = settings.run(work)
    if status == "queued":
        message = f"resumed workflow {name!r}: queued for an executor"
    else:
        # Started by hand (no registered function): no executor takes it.
        message = f"resumed workflow {name!r}: it was started by hand, so start it again (Ctx.start) to run it"
    settings.print({"name": name, "resumed": True, "status": status}, lambda: message)


@cli.command()
@click.argument("name", type=Name("workflow"))
@click.argument("new_name", type=Name("workflow"))
@click.option("--from-step", "from_step", type=Name("step"), metavar="STEP", help="Run again from this step or child workflow on (default: from the start).")
@click.option("--input", "input_json", metavar="JSON", help="A new input, as JSON (default: the source's).")
@connection_options()
@click.pass_obj
def fork(settings: Settings, name: str, new_name: str, from_step: str | None, input_json: str | None) -> None:
    """Start NEW_NAME from the root workflow NAME, keeping what NAME
    completed before --from-step (a step or child workflow) and running the
    rest. Exits 1 if NAME, its step or child, or a free NEW_NAME is missing."""
    replace = input_json is not None
    try:
        new_input = None if input_json is None else render.parse_json(input_json)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--input") from None

    async def work(db: Db) -> str:
        try:
            if replace:
                run = await fork_workflow(db, name, new_name, from_step=from_step, input=new_input)
            else:
                run = await fork_workflow(db, name, new_name, from_step=from_step)
        except ConfigError as exc:  # an unknown step or a taken name: not a database problem
            raise Failed(str(exc)) from None
        return run.status

    status = settings.run(work)
    where = "queued for an executor" if status == "queued" else "start it (Ctx.start) to run it"
    settings.print(
        {"name": new_name, "forked_from": name, "from_step": from_step, "status": status},
        lambda: f"forked {name!r} as {new_name!r}: {where}",
    )


@cli.command()
@connection_options()
@click.pass_obj
def queues(settings: Settings) -> None:
    """List the queues: limits, runs running and waiting, rate use."""
    found = settings.run(list_queues)
    now = _now()
    settings.print(found, lambda: render.queues_table(found, now) if found else "no queues")


@cli.command()
@click.option(
    "--older-than",
    "older_than",
    required=True,
    metavar="AGE",
    help="Delete what finished longer ago than this: 30d, 12h, 15m, 90s.",
)
@click.option(
    "--batch", type=click.IntRange(1, 100_000), default=1000, show_default=True, help="Roots per transaction."
)
@connection_options()
@click.pass_obj
def gc(settings: Settings, older_than: str, batch: int) -> None:
    """Delete finished (completed, failed, cancelled) root workflows with
    their children and steps, in batches. Unfinished runs are never touched."""
    try:
        age = render.parse_duration(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    if age.total_seconds() > MAX_AGE:
        longest = f"{MAX_AGE / 86400:.0f}d"
        raise click.BadParameter(f"{older_than!r} is longer than {longest} (a century), the most gc takes", param_hint="--older-than")
    deleted = settings.run(lambda db: collect(db, age, batch=batch))
    settings.print(
        {"deleted": deleted, "older_than": age},
        lambda: f"deleted {deleted} finished workflow{'' if deleted == 1 else 's'} "
        f"(finished more than {older_than} ago) with their children and steps",
    )


@cli.command()
@click.argument("target", metavar="MODULE:OBJECT")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 100_000),
    help="Most runs at once (default 100), for a list of workflows.",
)
@connection_options(json_flag=False)
@click.pass_obj
def worker(settings: Settings, target: str, concurrency: int | None) -> None:
    """Run an Executor until SIGTERM or Ctrl-C, then stop gracefully.

    OBJECT (in MODULE, imported from the current directory too) is a list of
    @durable.workflow functions, or a function that takes a durable.Db and
    returns a durable.Executor (sync or async).
    """
    try:
        made = load(target)
    except CannotLoad as exc:
        raise click.BadParameter(str(exc), param_hint="MODULE:OBJECT") from None
    if concurrency is not None and not isinstance(made, Workflows):
        raise click.UsageError("--concurrency is for a list of workflows: a factory makes its own Executor")
    configure_logging()

    async def serving() -> None:
        db = await settings.connect(migrate=True, max_connections=10)
        try:
            await serve(db, made, concurrency)
        finally:
            await db.close()

    try:
        asyncio.run(serving())
    except DurableError as exc:
        raise Failed(str(exc)) from None
    except NotAWorker as exc:
        raise Failed(str(exc)) from None


@cli.command()
@connection_options(json_flag=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port to listen on.")
@click.option("--read-only", is_flag=True, help="Show only: refuse every change.")
@click.option("--token", "use_token", is_flag=True, help="Require a token (printed in the URL at start).")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a browser.")
@click.pass_obj
def ui(settings: Settings, host: str, port: int, read_only: bool, use_token: bool, open_browser: bool) -> None:
    """Serve a web view of the workflows (needs `pip install 'durable-pg[ui]'`).

    Listens on 127.0.0.1 by default; another address needs --token or
    --read-only. Only this address is accepted in the Host header."""
    try:
        from . import ui as web
    except ImportError as exc:
        raise Failed(f"durable ui needs the ui extra: pip install 'durable-pg[ui]' ({exc.name or exc} is missing)") from None
    if not web.is_loopback(host) and not (use_token or read_only):
        raise click.UsageError(
            f"--host {host} is reachable from other machines: add --token (a secret printed at start) or --read-only"
        )
    token = web.new_token() if use_token else None
    try:
        sock = web.bind(host, port)
    except OSError as exc:
        raise Failed(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else ("127.0.0.1" if host in ("0.0.0.0", "") else host)
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")

    async def serving() -> None:
        db = await settings.connect(max_connections=4)
        try:
            app = web.make_app(db, host=host, port=port, read_only=read_only, token=token)
            click.echo(f"durable ui{' (read-only)' if read_only else ''}: {url}", err=True)
            if open_browser:
                import webbrowser

                webbrowser.open(url)
            await web.serve(app, sock)
        finally:
            await db.close()

    try:
        asyncio.run(serving())
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()


def main() -> None:
    """The ``durable`` console script."""
    cli(prog_name="durable")
