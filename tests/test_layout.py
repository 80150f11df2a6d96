"""The package's layout rule: no module of ``durable`` uses another's
private names (a name starting with ``_``), so that what a module keeps to
itself can change without reading the rest. A module's private *modules*
(``from . import _core``) are the package's own: those are fine.

Checked on the source with ``ast``, nothing imported."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "python" / "durable"


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def module_of(path: Path) -> list[str]:
    """The dotted name of the module at ``path``, as a list (``["durable", "ui", "pages"]``)."""
    parts = ["durable", *path.relative_to(PACKAGE).with_suffix("").parts]
    return parts[:-1] if parts[-1] == "__init__" else parts


def is_module(dotted: list[str]) -> bool:
    """Whether ``dotted`` names a module or package of ``durable`` (the
    compiled ``_core`` by its stub)."""
    if not dotted or dotted[0] != "durable":
        return False
    place = PACKAGE.joinpath(*dotted[1:])
    return place.is_dir() or any(place.with_suffix(suffix).is_file() for suffix in (".py", ".pyi"))


def target(node: ast.ImportFrom, importer: list[str], package: bool) -> list[str] | None:
    """The module a ``from ... import`` reads from, dotted; None outside ``durable``."""
    if node.level == 0:
        base: list[str] = []
    else:
        here = importer if package else importer[:-1]
        base = here[: len(here) - (node.level - 1)]
    dotted = base + (node.module.split(".") if node.module else [])
    return dotted if dotted and dotted[0] == "durable" else None


def offences(tree: ast.Module, importer: list[str], package: bool) -> list[str]:
    """Each use in the module ``importer`` (whose source is ``tree``; an
    ``__init__`` if ``package``) of another module's private name, said with
    its line."""
    found = []
    modules: dict[str, str] = {}  # local name -> the durable module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = target(node, importer, package)
            if source is None:
                continue
            for alias in node.names:
                if is_module(source + [alias.name]):
                    modules[alias.asname or alias.name] = ".".join(source + [alias.name])
                elif private(alias.name):
                    found.append(f"{node.lineno} imports the private name {alias.name!r} of {'.'.join(source)}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "durable" and alias.asname is not None:
                    modules[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and private(node.attr)
        ):
            found.append(f"{node.lineno} uses the private name {node.attr!r} of {modules[node.value.id]}")
    return sorted(found, key=lambda said: int(said.split()[0]))


def test_no_module_uses_another_modules_private_names() -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 20, f"found only {len(sources)} modules under {PACKAGE}"
    found = []
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        where = path.relative_to(PACKAGE.parent)
        found += [f"{where}:{said}" for said in offences(tree, module_of(path), path.name == "__init__.py")]
    assert not found, "private names used across modules (make them public, or move the code):\n" + "\n".join(
        found
    )


def test_the_check_sees_each_offence() -> None:
    """The check finds each kind of offence and passes the package's
    private modules (else the rule above could pass on anything)."""
    source = (
        "from ._ctx import _in_step, current\n"
        "from . import _core, _ctx\n"
        "from durable._otel import _hidden\n"
        "import durable._json as json_module\n"
        "print(_ctx._attempt, _core.MAX_NAME_BYTES, json_module._dumps, _ctx.__doc__)\n"
    )
    assert offences(ast.parse(source), ["durable", "probe"], False) == [
        "1 imports the private name '_in_step' of durable._ctx",
        "3 imports the private name '_hidden' of durable._otel",
        "5 uses the private name '_attempt' of durable._ctx",
        "5 uses the private name '_dumps' of durable._json",
    ]
    in_ui = "from .. import _cli_render as render\nfrom .._ctx import _in_step\nprint(render._UNITS, render.cut)\n"
    assert offences(ast.parse(in_ui), ["durable", "ui", "probe"], False) == [
        "2 imports the private name '_in_step' of durable._ctx",
        "3 uses the private name '_UNITS' of durable._cli_render",
    ]
    in_init = "from ._names import _HASH_DIGITS\nfrom .actions import Actions\n"
    assert offences(ast.parse(in_init), ["durable", "ui"], True) == [
        "1 imports the private name '_HASH_DIGITS' of durable.ui._names",
    ]
