"""Writes doc/reference.md from the docstrings: the Python API and the CLI.

    .venv/bin/python tools/gen_reference.py           # rewrite doc/reference.md
    .venv/bin/python tools/gen_reference.py --check   # exit 1 if it is stale

The reference is the docstrings, signatures, ``#:`` comments of fields and
the ``durable`` command's help, nothing written by hand; doc/api.md says
what they cannot (rules across calls, errors, limits). tests/test_reference.py
fails when the checked-in file differs from what this writes, and when a
public name of ``durable`` or ``durable.sync`` has no place below.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

import durable
import durable.errors
import durable.sync
from durable import cli

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "doc" / "reference.md"
PACKAGE = ROOT / "python" / "durable"
REGENERATE = ".venv/bin/python tools/gen_reference.py"

#: The API by section: public names of ``durable``, and for a class the
#: members shown (in this order). Every name of ``durable.__all__`` has a
#: place here; ``render`` refuses a public name left out.
SECTIONS: list[tuple[str, str, list[tuple[str, list[str]]]]] = [
    (
        "Connecting",
        "A `Db` per process, made by `init`; see [Connecting and TLS](api.md#connecting-and-tls).",
        [
            ("init", []),
            ("Db", ["schema", "owner_id", "stats", "close"]),
            ("start_embedded", []),
        ],
    ),
    (
        "Workflows and steps",
        "A workflow by hand (`Ctx`) or as a decorated function (`Workflow`); see "
        "[concepts](guide/concepts.md).",
        [
            (
                "Ctx",
                [
                    "start",
                    "name",
                    "id",
                    "root_id",
                    "input",
                    "attempt",
                    "created",
                    "status",
                    "output",
                    "deadline_in",
                    "db",
                    "step",
                    "transaction",
                    "child",
                    "sleep",
                    "recv",
                    "set_event",
                    "complete",
                    "fail",
                    "run",
                    "release",
                    "auto_name",
                ],
            ),
            ("Starting", []),
            ("workflow", []),
            ("Workflow", ["name", "queue", "run", "run_child", "enqueue", "enqueue_many"]),
            ("step", []),
            ("Backoff", []),
            ("attempt", []),
            ("Transaction", ["execute", "fetch", "fetchrow", "fetchval"]),
        ],
    ),
    (
        "Runs, queues and executors",
        "See [queues and schedules](guide/queues-and-schedules.md).",
        [
            ("Run", ["name", "status", "created", "db", "result"]),
            ("result", []),
            ("resume", []),
            ("cancel", []),
            ("fork", []),
            ("create_queue", []),
            ("pause_queue", []),
            ("resume_queue", []),
            ("list_queues", []),
            ("QueueInfo", []),
            ("RateUse", []),
            ("Executor", ["running", "run", "stop"]),
        ],
    ),
    (
        "Messages and events",
        "`ctx.recv` and `ctx.set_event` are under `Ctx`; see [waiting](guide/waiting.md).",
        [("send", []), ("get_event", [])],
    ),
    (
        "Reading and collecting",
        "Read-only views from any process; they never take a workflow over.",
        [
            ("get", []),
            ("list_workflows", []),
            ("tree", []),
            ("WorkflowInfo", []),
            ("StepInfo", []),
            ("WorkflowTree", []),
            ("gc", []),
        ],
    ),
    (
        "Types",
        "",
        [("Json", []), ("WorkflowPath", [])],
    ),
]

#: The errors, in the order of the table in doc/api.md ("Errors").
ERRORS = [
    "DurableError",
    "ConfigError",
    "InvalidName",
    "NotJson",
    "ValueTooLarge",
    "DatabaseError",
    "ConnectError",
    "SchemaTooNew",
    "InputMismatch",
    "DuplicateStep",
    "WorkflowFinished",
    "WorkflowBusy",
    "WorkflowFailed",
    "WorkflowNotFound",
    "LeaseLost",
    "Cancelled",
    "StepInterrupted",
    "DeadlineExceeded",
    "WaitCycle",
]

#: Classes users construct themselves: their constructor's signature is shown.
CONSTRUCTED = ("Executor",)

#: How the reference names an instance of a class in its members' headings.
INSTANCES = {"Ctx": "ctx", "Workflow": "workflow", "Run": "run", "Db": "db", "Transaction": "tx", "Executor": "executor"}

#: Options every command takes after its name too (see ``cli.connection_options``).
CONNECTION_OPTIONS = {"--dsn", "--schema", "--connect-timeout", "--json"}


def markdown(doc: str) -> str:
    """A docstring as Markdown: reST roles and double backticks become
    code, a ``::`` block a fenced one, and a mention of a document of doc/
    a link to it (to its section when the mention names one)."""
    doc = re.sub(r":(?:func|class|attr|meth|mod):`~?([^`]+)`", r"`\1`", doc)
    doc = doc.replace("``", "`")
    doc = re.sub(r'"([^"]+)" in\s+doc/(\w+)\.md', lambda m: f"[{m[1]}]({m[2]}.md#{slug(m[1])})", doc)
    doc = re.sub(r"doc/(\w+)\.md,\s+\"([^\"]+)\"", lambda m: f"[{m[2]}]({m[1]}.md#{slug(m[2])})", doc)
    doc = re.sub(r"(?<![\[(/])doc/(\w+)\.md", r"[\1.md](\1.md)", doc)
    return literal_blocks(doc)


def literal_blocks(doc: str) -> str:
    """reST's ``::`` paragraph (the indented lines after it) as a fenced block."""
    out: list[str] = []
    lines = doc.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() != "::":
            out.append(lines[i])
            i += 1
            continue
        i += 1
        block: list[str] = []
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
            block.append(lines[i])
            i += 1
        while block and not block[-1].strip():
            block.pop()
        out += ["```python", *inspect.cleandoc("\n".join(block)).splitlines(), "```", ""]
    return "\n".join(out)


def slug(title: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def docstring(obj: Any, what: str) -> str:
    doc = inspect.getdoc(obj)
    if not doc:
        raise SystemExit(f"{what} has no docstring: write one, then run {REGENERATE}")
    return markdown(doc)


def default_text(value: Any) -> str:
    """A default as the reader should see it, the same on every run."""
    if isinstance(value, type):
        return value.__name__
    if type(value) is object:  # a sentinel: "not given"
        return "<not given>"
    return repr(value)


def signature(fn: Callable[..., Any], *, skip_self: bool = False) -> str:
    """``(a: int, *, b: str = 'x') -> T``, written out from the parameters
    (not ``str(inspect.signature)``, whose defaults may hold addresses)."""
    sig = inspect.signature(fn)
    parts: list[str] = []
    star_done = False
    slash_pending = False
    params = list(sig.parameters.values())
    if skip_self and params and params[0].name in ("self", "cls"):
        params = params[1:]
    for param in params:
        if param.kind is param.POSITIONAL_ONLY:
            slash_pending = True
        elif slash_pending:
            parts.append("/")
            slash_pending = False
        if param.kind is param.KEYWORD_ONLY and not star_done:
            parts.append("*")
            star_done = True
        stars = "*" if param.kind is param.VAR_POSITIONAL else "**" if param.kind is param.VAR_KEYWORD else ""
        text = stars + param.name
        if param.kind is param.VAR_POSITIONAL:
            star_done = True
        if param.annotation is not param.empty:
            text += f": {annotation(param.annotation)}"
        if param.default is not param.empty:
            text += f" = {default_text(param.default)}"
        parts.append(text)
    if slash_pending:
        parts.append("/")
    result = "" if sig.return_annotation is sig.empty else f" -> {annotation(sig.return_annotation)}"
    return f"({', '.join(parts)}){result}"


def annotation(value: Any) -> str:
    return value if isinstance(value, str) else inspect.formatannotation(value)


def comments_before(lines: list[str], pattern: re.Pattern[str]) -> dict[str, str]:
    """The ``#:`` comment lines right above each line matching ``pattern``
    (its first group names it), joined."""
    found: dict[str, str] = {}
    pending: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        match = pattern.match(line)
        if match and pending:
            found.setdefault(match.group(1), " ".join(pending))
        pending = []
    return found


def field_comments(cls: type) -> dict[str, str]:
    """``#:`` comments of a class's fields (``name: type``) and of the
    attributes its methods set (``self.name = ...``)."""
    lines = inspect.getsource(cls).splitlines()
    fields = comments_before(lines, re.compile(r"\s+(\w+)\s*:"))
    attributes = comments_before(lines, re.compile(r"\s+self\.(\w+)\s*(?::[^=]*)?="))
    return {**fields, **attributes}


def alias_comment(name: str) -> str:
    """The ``#:`` comment above a module-level alias ``name`` of the package."""
    pattern = re.compile(rf"({re.escape(name)})\s*(?::\s*\w+\s*)?=")
    for path in sorted(PACKAGE.glob("*.py")):
        found = comments_before(path.read_text().splitlines(), pattern)
        if name in found:
            return markdown(found[name])
    raise SystemExit(f"durable.{name} has no #: comment above its definition: write one, then run {REGENERATE}")


def alias_definition(name: str) -> str:
    pattern = re.compile(rf"^{re.escape(name)}\s*(?::\s*\w+\s*)?=\s*(.+)$")
    for path in sorted(PACKAGE.glob("*.py")):
        for line in path.read_text().splitlines():
            match = pattern.match(line)
            if match:
                return match.group(1).strip()
    raise SystemExit(f"durable.{name}: no definition found")


def kind_of(obj: Any) -> str:
    if inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(getattr(obj, "__wrapped__", None)):
        return "await "
    return ""


def render_function(qualified: str, fn: Callable[..., Any], *, method: bool = False, heading: str = "###") -> list[str]:
    head = f"{'####' if method else heading} `{qualified}`"
    call = f"{kind_of(fn)}{qualified}{signature(fn, skip_self=method)}"
    return [head, "", "```python", call, "```", "", docstring(fn, qualified), ""]


def render_member(cls: type, owner: str, member: str, comments: dict[str, str]) -> list[str]:
    raw = inspect.getattr_static(cls, member, None)
    qualified = f"{owner}.{member}"
    if isinstance(raw, property):
        assert raw.fget is not None
        returns = inspect.signature(raw.fget).return_annotation
        kind = "" if returns is inspect.Signature.empty else f": {annotation(returns)}"
        return [f"#### `{qualified}{kind}`", "", docstring(raw, qualified), ""]
    if isinstance(raw, staticmethod):
        return render_function(f"{cls.__name__}.{member}", raw.__func__, heading="####")
    if callable(raw):
        return render_function(qualified, raw, method=True)
    if member in comments:
        return [f"#### `{qualified}`", "", markdown(comments[member]), ""]
    raise SystemExit(f"{qualified}: neither a method, a property nor an attribute with a #: comment")


def render_fields(cls: type) -> list[str]:
    comments = field_comments(cls)
    rows = ["| field | type | meaning |", "|---|---|---|"]
    for field in dataclasses.fields(cls):
        meaning = markdown(comments.get(field.name, "")).replace("|", "\\|")
        kind = annotation(field.type).replace("|", "\\|")
        rows.append(f"| `{field.name}` | `{kind}` | {meaning} |")
    return [*rows, ""]


def render_class(name: str, cls: type, members: list[str]) -> list[str]:
    qualified = f"durable.{name}"
    lines = [f"### `{qualified}`", ""]
    if dataclasses.is_dataclass(cls):
        frozen = cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
        lines += [f"A {'frozen ' if frozen else ''}dataclass.", ""]
    lines += [docstring(cls, qualified), ""]
    if name in CONSTRUCTED:
        constructor = signature(cls).removesuffix(" -> None")
        lines += ["```python", f"{qualified}{constructor}", "```", ""]
    if dataclasses.is_dataclass(cls):
        lines += render_fields(cls)
    comments = field_comments(cls)
    owner = INSTANCES.get(name, qualified)
    for member in members:
        lines += render_member(cls, owner, member, comments)
    return lines


def render_error(name: str) -> list[str]:
    cls = getattr(durable, name)
    bases = ", ".join(base.__name__ for base in cls.__bases__)
    lines = [f"### `durable.{name}({bases})`", "", docstring(cls, f"durable.{name}"), ""]
    return lines


def render_sync() -> list[str]:
    lines = [
        "## `durable.sync`",
        "",
        docstring(durable.sync, "durable.sync"),
        "",
        "| blocking | arguments | the async one |",
        "|---|---|---|",
    ]
    for name in sorted(durable.sync.__all__):
        fn = getattr(durable.sync, name)
        wrapped = getattr(fn, "__wrapped__", None)
        twin = f"`durable.{wrapped.__name__}`" if wrapped is not None else markdown(docstring(fn, f"durable.sync.{name}"))
        args = signature(fn).replace("|", "\\|")
        lines.append(f"| `durable.sync.{name}` | `{args}` | {twin.replace(chr(10), ' ')} |")
    return [*lines, ""]


def option_text(param: click.Parameter) -> str:
    opts = ", ".join([*param.opts, *param.secondary_opts])
    if isinstance(param, click.Option) and param.is_flag:
        return opts
    if isinstance(param.type, click.Choice):
        return f"{opts} [{'|'.join(str(choice) for choice in param.type.choices)}]"
    if param.metavar is None and isinstance(param.type, click.IntRange):
        return f"{opts} N"
    metavar = param.metavar or param.type.name.upper()
    return f"{opts} {metavar}"


def render_params(params: list[click.Parameter]) -> list[str]:
    rows = ["| option | meaning |", "|---|---|"]
    for param in params:
        if not isinstance(param, click.Option):
            continue
        meaning = param.help or ""
        if isinstance(param.type, click.IntRange):
            meaning += f" From {param.type.min} to {param.type.max}."
        if param.show_default and param.default is not None and not param.is_flag:
            meaning += f" Default: `{param.default}`."
        cell = option_text(param).replace("|", "\\|")
        rows.append(f"| `{cell}` | {meaning.strip().replace('|', chr(92) + '|')} |")
    return rows if len(rows) > 2 else []


def usage(name: str, command: click.Command) -> str:
    pieces = []
    if any(isinstance(p, click.Option) and "--help" not in p.opts for p in command.params):
        pieces.append("[OPTIONS]")
    for param in command.params:
        if isinstance(param, click.Argument):
            metavar = param.metavar or param.name.upper() if param.name else "ARG"
            pieces.append(metavar)
    return f"durable {name} {' '.join(pieces)}".rstrip()


def render_cli() -> list[str]:
    group = cli.cli
    assert isinstance(group, click.Group)
    lines = [
        "## The `durable` command",
        "",
        "`durable [OPTIONS] COMMAND [ARGS]`, also `python -m durable`.",
        "",
        markdown(inspect.cleandoc(group.help or "")),
        "",
        *render_params(group.params),
        "",
    ]
    for name, command in group.commands.items():
        own = [p for p in command.params if not (isinstance(p, click.Option) and set(p.opts) & CONNECTION_OPTIONS)]
        help_text = markdown(inspect.cleandoc(command.help or ""))
        lines += [f"### `durable {name}`", "", "```", usage(name, command), "```", "", help_text, ""]
        table = render_params(own)
        if table:
            lines += [*table, ""]
    return lines


def render() -> str:
    """The whole of doc/reference.md."""
    placed = {name for _, _, items in SECTIONS for name, _ in items} | set(ERRORS)
    missing = sorted(set(durable.__all__) - placed)
    if missing:
        raise SystemExit(f"public names with no place in tools/gen_reference.py: {', '.join(missing)}")
    lines = [
        "# Reference",
        "",
        "<!-- Generated from the docstrings by tools/gen_reference.py: do not edit by hand. -->",
        f"<!-- Regenerate: {REGENERATE} -->",
        "",
        "Every public name of `durable` and `durable.sync`, and the `durable` command, as their",
        "docstrings and help say. What they cannot say (how calls work together, the errors, the",
        "limits, names and child paths) is in [api.md](api.md); how to use them, in the",
        "[guide](guide/README.md). Durations take a `timedelta` or a number of seconds",
        "(`Seconds`).",
        "",
        "## Contents",
        "",
    ]
    for title, _, _ in SECTIONS:
        lines.append(f"- [{title}](#{slug(title)})")
    lines += ["- [Errors](#errors)", "- [`durable.sync`](#durablesync)", "- [The `durable` command](#the-durable-command)", ""]
    for title, intro, items in SECTIONS:
        lines += [f"## {title}", ""]
        if intro:
            lines += [intro, ""]
        for name, members in items:
            obj = getattr(durable, name)
            if name in ("Json", "WorkflowPath"):
                lines += [f"### `durable.{name}`", "", "```python", f"{name} = {alias_definition(name)}", "```", "", alias_comment(name), ""]
            elif isinstance(obj, type):
                lines += render_class(name, obj, members)
            else:
                lines += render_function(f"durable.{name}", obj)
    lines += ["## Errors", "", docstring(durable.errors, "durable.errors"), ""]
    for name in ERRORS:
        lines += render_error(name)
    lines += render_sync()
    lines += render_cli()
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.rstrip("\n") + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET.relative_to(ROOT)} is stale: run {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET.relative_to(ROOT)} ({len(text.split())} words)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
