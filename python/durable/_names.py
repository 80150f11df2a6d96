"""Names: checking the user's before anything is written, and fitting the
ones durable derives from them into the limit.

A name (of a workflow, step, topic, key...) is at most 255 bytes in UTF-8.
durable builds step names from the user's (``<topic> until``, ``event
<key>``, ``base#2``...), which may be longer than the user's own argument:
those are shortened, the same way on every run, so that a replay finds
them.
"""

from __future__ import annotations

import hashlib
import json

from ._core import MAX_NAME_BYTES
from .errors import ConfigError, InvalidName

#: Hex digits of the SHA-256 that end a shortened name (64 bits).
_HASH_DIGITS = 16


def check(what: str, name: str) -> str:
    """``name`` if it is a valid name (not empty, at most 255 bytes, no NUL,
    text that UTF-8 can encode); else ``InvalidName`` naming ``what`` (the
    user's argument: ``topic``, ``event key``...)."""
    if not isinstance(name, str):
        raise ConfigError(f"invalid {what} name {name!r}: a name is a str, not {type(name).__name__}")
    if not name:
        reason = "it is empty"
    elif len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        reason = f"it is longer than {MAX_NAME_BYTES} bytes"
    elif "\x00" in name:
        reason = "it contains a NUL character"
    elif (surrogate := lone_surrogate(name)) is not None:
        reason = surrogate
    else:
        return name
    raise InvalidName(f"invalid {what} name {quoted(name)}: {reason}")


def text(what: str, value: str) -> str:
    """``value`` if Postgres can store it as text (no NUL, no lone
    surrogate); else ``ConfigError`` naming ``what`` (a filter, an option)."""
    if not isinstance(value, str):
        raise ConfigError(f"invalid {what} {value!r}: it must be a str, not {type(value).__name__}")
    if "\x00" in value:
        reason = "it contains a NUL character, which Postgres text cannot hold"
    elif (surrogate := lone_surrogate(value)) is not None:
        reason = surrogate
    else:
        return value
    raise ConfigError(f"invalid {what} {quoted(value)}: {reason}")


def quoted(value: str) -> str:
    """The first 80 characters of ``value`` in double quotes, as the engine
    and the SQL ``enqueue`` show a name (JSON's escapes; a lone surrogate
    escaped too, so that the message can be printed)."""
    shown = value[:80]
    return json.dumps(shown, ensure_ascii=lone_surrogate(shown) is not None)


def lone_surrogate(value: str) -> str | None:
    """Why ``value`` is not text UTF-8 can encode (a lone surrogate, as
    ``os.fsdecode`` makes of bytes that are not UTF-8), or None."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"it holds a lone surrogate ({value[e.start]!r} at position {e.start}), which is not text in UTF-8"
    return None


def derived(name: str) -> str:
    """A name durable built, made to fit: unchanged when it fits (so names
    saved before stay valid); else its beginning, cut at a character
    boundary, then ``~`` and the first 16 hex digits of the SHA-256 of the
    whole name: the same on every run, and distinct for distinct names."""
    whole = name.encode("utf-8", "surrogatepass")
    if len(whole) <= MAX_NAME_BYTES:
        return name
    keep = MAX_NAME_BYTES - 1 - _HASH_DIGITS
    while whole[keep] & 0xC0 == 0x80:  # a continuation byte: back to the character's start
        keep -= 1
    digest = hashlib.sha256(whole).hexdigest()[:_HASH_DIGITS]
    return f"{whole[:keep].decode('utf-8', 'surrogatepass')}~{digest}"


#: Where a workflow is: a root by its name (a ``str``: any name, ``/`` and
#: all, is one name), or a child by its path, a tuple or list of names, the
#: root's first (``("order-17", "payment")``). A name is never split.
WorkflowPath = str | tuple[str, ...] | list[str]


def path_of(what: str, workflow: object) -> tuple[str, ...]:
    """The path that ``workflow`` (a ``WorkflowPath``) names, each name
    checked; ``ConfigError`` naming ``what`` (the call) for anything else,
    ``InvalidName`` for a bad name."""
    if isinstance(workflow, str):
        path: tuple[str, ...] = (workflow,)
    elif isinstance(workflow, (tuple, list)) and workflow and all(isinstance(name, str) for name in workflow):
        path = tuple(workflow)
    else:
        raise ConfigError(
            f"{what}'s workflow must be a root's name (a str) or a child's path (a tuple or list of names, "
            f"the root's first, like ('order-17', 'payment')), not {workflow!r}"
        )
    for name in path:
        check("workflow", name)
    return path


def shown(path: tuple[str, ...]) -> str:
    """A workflow as messages name it: ``named 'a/b'`` for a root, ``at path
    ('a', 'b')`` for a child, so that the two never read alike."""
    return f"named {path[0]!r}" if len(path) == 1 else f"at path {path!r}"
