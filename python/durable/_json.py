"""The values durable saves: JSON, bounded for the type checker."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias, TypeVar

#: What a step, a workflow's input or a workflow's result may be. A value is
#: its JSON form on every run: the first run already returns what a replay
#: returns (see doc/api.md, "Values"). The type checker flags what cannot be
#: JSON at the top level (a tuple, a set, a datetime); nested values are
#: checked when saved, with ``NotJson``.
Json: TypeAlias = None | bool | int | float | str | list[Any] | Mapping[str, Any]

#: A JSON value of a given type (the result of a step, a workflow's input or output).
J = TypeVar("J", bound=Json)
