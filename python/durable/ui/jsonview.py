"""The run page's JSON viewer: a value as nested ``<details>`` (objects and
arrays fold; rendered on the server, so the browser parses nothing),
integers as their exact digits (a JavaScript number would round them), every
string escaped, and a copy button holding the exact JSON text (``json.js``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from markupsafe import Markup, escape

#: Objects and arrays this deep or deeper start folded.
OPEN_DEPTH = 2
#: Deeper than this, a value is shown as its JSON text (no recursion without end).
MAX_DEPTH = 64


COLUMNS = ("input", "output", "error")


class ExactJson:
    """The tasks' JSON values parsed from the database's text, so that an
    integer of any size stays exact (the engine's decoded values hold those
    beyond 64 bits as floats)."""

    def __init__(self, texts: Iterable[tuple[int, str | None, str | None, str | None]]) -> None:
        self.values = {task_id: dict(zip(COLUMNS, columns)) for task_id, *columns in texts}

    def __call__(self, task_id: int, column: str, decoded: Any) -> Any:
        """The value of ``column`` of task ``task_id`` (``decoded`` if unknown)."""
        text = self.values.get(task_id, {}).get(column)
        return decoded if text is None else json.loads(text)


def exact_json(value: Any) -> str:
    """The JSON text of ``value``, integers exact, indented."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def json_view(value: Any) -> Markup:
    """``value`` as a foldable tree with a copy button."""
    text = escape(exact_json(value))
    button = Markup('<button type="button" class="json-copy" data-copy="{}">Copy</button>').format(text)
    return Markup('<div class="json-view">{}<div class="json-tree">{}</div></div>').format(button, _node(value, 0))


def _node(value: Any, depth: int) -> Markup:
    if isinstance(value, dict) and value:
        if depth >= MAX_DEPTH:
            return _text(value)
        items = Markup("").join(
            Markup('<li><span class="json-key">{}</span>: {}</li>').format(json.dumps(key, ensure_ascii=False), _node(item, depth + 1))
            for key, item in value.items()
        )
        return _fold(f"{{ {len(value)} key{'' if len(value) == 1 else 's'} }}", "json-object", items, depth)
    if isinstance(value, list) and value:
        if depth >= MAX_DEPTH:
            return _text(value)
        items = Markup("").join(Markup("<li>{}</li>").format(_node(item, depth + 1)) for item in value)
        return _fold(f"[ {len(value)} item{'' if len(value) == 1 else 's'} ]", "json-array", items, depth)
    return _scalar(value)


def _fold(summary: str, kind: str, items: Markup, depth: int) -> Markup:
    opened = " open" if depth < OPEN_DEPTH else ""
    return Markup('<details class="json-fold"{}><summary>{}</summary><ul class="{}">{}</ul></details>').format(
        Markup(opened), summary, kind, items
    )


def _scalar(value: Any) -> Markup:
    if value is None or isinstance(value, bool):
        return Markup('<span class="json-literal">{}</span>').format(json.dumps(value))
    if isinstance(value, (int, float)):
        # int: Python's digits, exact however big.
        return Markup('<span class="json-number">{}</span>').format(json.dumps(value))
    if isinstance(value, str):
        return Markup('<span class="json-string">{}</span>').format(json.dumps(value, ensure_ascii=False))
    return _text(value)


def _text(value: Any) -> Markup:
    return Markup('<span class="json-text">{}</span>').format(json.dumps(value, ensure_ascii=False, default=str))
