"""The run page's JSON viewer: a value as nested ``<details>`` (objects and
arrays fold; rendered on the server, so the browser parses nothing),
integers as their exact digits (a JavaScript number would round them), every
string escaped, and a copy button holding the exact JSON text (``json.js``).
A value too large to show whole is shown cut, with a link that serves it all."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from markupsafe import Markup, escape

#: Objects and arrays this deep or deeper start folded.
OPEN_DEPTH = 2
#: Deeper than this, a value is shown as its JSON text (no recursion without end).
MAX_DEPTH = 64
#: A value whose JSON text is longer (UTF-8 bytes) is shown cut to its
#: beginning, as text, with a link to the whole (a viewer, and its copy
#: button, would hold it twice: a 10 MB output made a 20 MB page).
SHOWN_BYTES = 64 * 1024
#: The most HTML a value's viewer may take (an array of small numbers takes
#: about 20 times its JSON): beyond, the value is shown cut.
VIEW_BYTES = 256 * 1024
#: The most HTML a page spends on its values in all (its steps' outputs
#: too): past it, a value is shown cut to what is left, or only linked.
PAGE_BYTES = 2 * 1024 * 1024


COLUMNS = ("input", "output", "error")


def value_url(task_id: int, column: str) -> str:
    """Where the whole value of ``column`` of task ``task_id`` is served."""
    return f"/api/values/{task_id}/{column}"


class ExactJson:
    """The tasks' JSON values as the run page shows them: parsed from the
    database's text, so that an integer of any size stays exact (the
    engine's decoded values hold those beyond 64 bits as floats); in the
    viewer when small enough (``SHOWN_BYTES`` of JSON, ``VIEW_BYTES`` of
    HTML), else cut; ``budget`` bytes of HTML for the page in all."""

    def __init__(self, texts: Iterable[tuple[int, str | None, str | None, str | None]], budget: int = PAGE_BYTES) -> None:
        self.values = {task_id: dict(zip(COLUMNS, columns)) for task_id, *columns in texts}
        self.left = budget

    def text(self, task_id: int, column: str, decoded: Any) -> str:
        """The JSON text of ``column`` of task ``task_id`` (``decoded``'s if unknown)."""
        text = self.values.get(task_id, {}).get(column)
        return json.dumps(decoded, ensure_ascii=False, default=str) if text is None else text

    def too_large(self, task_id: int, column: str, decoded: Any) -> bool:
        """Whether the value is larger than a page shows of one."""
        return len(self.text(task_id, column, decoded).encode()) > SHOWN_BYTES

    def __call__(self, task_id: int, column: str, decoded: Any) -> Markup:
        """The value of ``column`` of task ``task_id`` (``decoded`` if
        unknown) in the viewer, or cut, with a link to the whole."""
        text = self.text(task_id, column, decoded)
        size = len(text.encode())
        room = min(SHOWN_BYTES, self.left)
        view = json_view(json.loads(text)) if size <= room else None
        if view is None or len(view) > min(VIEW_BYTES, self.left):
            view = cut_view(text, size, room, value_url(task_id, column))
        self.left = max(self.left - len(view), 0)
        return view


def cut_view(text: str, size: int, room: int, url: str) -> Markup:
    """The first ``room`` bytes of the JSON ``text`` (``size`` bytes in
    all), saying how much is shown, and a link to the whole at ``url``."""
    shown = text.encode()[:room].decode(errors="ignore")
    if len(shown.encode()) == size:
        said = f"{amount(size)} of JSON, shown as text (too many items for the viewer)."
        head = Markup('<pre class="json-text json-head">{}</pre>').format(shown)
    elif shown:
        said = f"{amount(size)} of JSON: the first {amount(len(shown.encode()))} shown."
        head = Markup('<pre class="json-text json-head">{}…</pre>').format(shown)
    else:
        said = f"{amount(size)} of JSON: not shown (a page shows at most {amount(PAGE_BYTES)} of values)."
        head = Markup("")
    link = Markup('<a class="json-whole" href="{}" target="_blank" rel="noopener">The whole value</a>').format(url)
    return Markup('<div class="json-view json-cut"><p class="json-cut-said">{} {}</p>{}</div>').format(said, link, head)


def amount(size: int) -> str:
    """``size`` bytes for a reader: ``512 bytes``, ``64.0 KiB``, ``10.0 MiB``."""
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"


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
