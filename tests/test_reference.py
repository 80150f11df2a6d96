"""The docs stay true to the code: doc/reference.md is what
tools/gen_reference.py writes from the docstrings today, every link between
the documents lands on a file and a heading that exist, and every call the
guide's examples make to durable names a real function with real keyword
arguments. No database needed."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import durable
import durable.sync

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "doc"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "tools" / "gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reference_is_what_the_docstrings_say_today() -> None:
    gen = generator()
    written = (DOC / "reference.md").read_text()
    assert written == gen.render(), (
        "doc/reference.md is stale: a docstring, signature or the CLI's help changed. "
        f"Regenerate it with `{gen.REGENERATE}` and commit the result."
    )


def test_every_public_name_has_a_place_in_the_reference() -> None:
    written = (DOC / "reference.md").read_text()
    for name in durable.__all__:
        assert f"### `durable.{name}" in written, f"durable.{name} is missing from doc/reference.md"
    for name in durable.sync.__all__:
        assert f"`durable.sync.{name}`" in written, f"durable.sync.{name} is missing from doc/reference.md"


# -- links ---------------------------------------------------------------------

#: The documents whose links are checked: the user's (README, guide, api,
#: reference, from-dbos), and every link into api.md from anywhere in doc/.
CHECKED = [ROOT / "README.md", *sorted((DOC / "guide").glob("*.md")), DOC / "api.md", DOC / "reference.md", DOC / "from-dbos.md"]

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file as GitHub makes them: a slug per
    heading (``-1``, ``-2``... for repeats) and every ``<a id>``."""
    gen = generator()
    found: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        heading = re.match(r"#{1,6} (.+)", line)
        if heading:
            base = gen.slug(heading.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
        found.update(re.findall(r'<a id="([^"]+)"', line))
    return found


def links(path: Path) -> Iterator[str]:
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if not in_code:
            yield from LINK.findall(line)


def test_every_link_of_the_docs_lands_on_a_file_and_a_heading() -> None:
    into_api = [p for p in sorted(DOC.rglob("*.md")) if p not in CHECKED]
    broken = []
    for path in [*CHECKED, *into_api]:
        for target in links(path):
            if re.match(r"[a-z]+:", target):
                continue  # http:, https:, mailto:
            file, _, anchor = target.partition("#")
            goal = path if not file else (path.parent / file).resolve()
            if path in into_api and goal != DOC / "api.md":
                continue
            if not goal.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and goal.suffix == ".md" and anchor not in anchors(goal):
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_docs_refer_to_nothing_outside_the_repository() -> None:
    for path in [*sorted((DOC / "guide").glob("*.md")), DOC / "api.md", DOC / "reference.md"]:
        text = path.read_text()
        assert not re.search(r"/work/|issue #?\d+|#\d{2,}\b", text), f"{path.relative_to(ROOT)} refers outside the repository"


# -- the examples call what exists -------------------------------------------

EXAMPLES = [ROOT / "README.md", *sorted((DOC / "guide").glob("*.md")), DOC / "api.md"]

#: Variables the examples use for instances, and the class each stands for.
INSTANCES: dict[str, type] = {
    "ctx": durable.Ctx,
    "child": durable.Ctx,
    "parent": durable.Ctx,
    "tx": durable.Transaction,
    "db": durable.Db,
    "executor": durable.Executor,
    "run": durable.Run,
}

#: What an attribute set on an instance (``run.name``) resolves to.
ATTRIBUTE = object()

#: Methods called on a decorated workflow (``ingest.enqueue(...)``).
WORKFLOW_METHODS = ("run", "run_child", "enqueue", "enqueue_many")


def python_blocks(path: Path) -> Iterator[tuple[int, str]]:
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i + 1
            i += 1
            while lines[i].strip() != "```":
                i += 1
            yield start + 1, "\n".join(lines[start:i])
        i += 1


def parse(source: str) -> ast.Module:
    tree = compile(source, "<doc>", "exec", flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    assert isinstance(tree, ast.Module)
    return tree


def dotted(node: ast.expr) -> str | None:
    """``durable.sync.init`` for that attribute chain; None for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def resolve(name: str, workflows: set[str]) -> tuple[Any, bool] | None:
    """What a dotted name of an example stands for (and whether it is
    certain), or None when it is not durable's."""
    head, _, rest = name.partition(".")
    if head == "durable":
        obj: Any = durable
        for part in rest.split("."):
            if not hasattr(obj, part):
                return (None, True)
            obj = getattr(obj, part)
        return (obj, True)
    if head == "Ctx":
        return (getattr(durable.Ctx, rest, None), True) if rest and "." not in rest else None
    if head in INSTANCES and rest and "." not in rest:
        cls = INSTANCES[head]
        if rest in instance_attributes(cls):
            return (ATTRIBUTE, True)
        return (getattr(cls, rest, None), True)
    if head in workflows and rest in WORKFLOW_METHODS:
        return (getattr(durable.Workflow, rest), True)
    return None


def instance_attributes(cls: type) -> set[str]:
    return set(re.findall(r"self\.(\w+)\s*(?::[^=]*)?=", inspect.getsource(cls)))


def keywords_of(fn: Callable[..., Any]) -> set[str] | None:
    """The keyword arguments ``fn`` takes (None: any)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def problems(tree: ast.Module) -> Iterator[str]:
    workflows = {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.AsyncFunctionDef)
        and any(dotted(d.func if isinstance(d, ast.Call) else d) == "durable.workflow" for d in node.decorator_list)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            name = dotted(node)
            if name is None:
                continue
            found = resolve(name, workflows)
            if found is not None and found[0] is None:
                yield f"{name} does not exist"
        if isinstance(node, ast.Call):
            name = dotted(node.func)
            found = None if name is None else resolve(name, workflows)
            if found is None or found[0] is None or not callable(found[0]):
                continue
            allowed = keywords_of(found[0])
            for keyword in node.keywords:
                if allowed is not None and keyword.arg is not None and keyword.arg not in allowed:
                    yield f"{name}() takes no keyword argument {keyword.arg!r}"


def collect() -> list[tuple[str, str]]:
    found = []
    for path in EXAMPLES:
        for line, source in python_blocks(path):
            found.append((f"{path.relative_to(ROOT)}:{line}", source))
    return found


@pytest.mark.parametrize(("where", "source"), collect(), ids=[where for where, _ in collect()])
def test_each_example_calls_only_what_durable_has(where: str, source: str) -> None:
    tree = parse(source)
    wrong = list(problems(tree))
    assert not wrong, f"{where}: " + "; ".join(wrong)


def test_the_check_of_the_examples_catches_an_invented_call() -> None:
    tree = parse(
        "await durable.enqueue_later(db, 'x')\n"
        "await ctx.step('a', f, retry=3)\n"
        "@durable.workflow\nasync def ingest(ctx, s): ...\n"
        "await ingest.enqueue(db, 'n', 1, delay_s=5)\n"
    )
    assert sorted(problems(tree)) == [
        "ctx.step() takes no keyword argument 'retry'",
        "durable.enqueue_later does not exist",
        "ingest.enqueue() takes no keyword argument 'delay_s'",
    ]
