"""Which runs a read of ``durable ui`` selects: one object for its filters."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunQuery:
    """The filters of the ui's reads of runs (``Engine.browse_runs``,
    ``runs_version``, ``count_runs``), read by the engine as its
    ``BrowseFilter``. ``None`` filters nothing."""

    status: str | None = None
    queue: str | None = None
    #: Names starting with this.
    name_prefix: str | None = None
    #: Created at or after / before, in microseconds since the epoch.
    since: int | None = None
    until: int | None = None
    #: The root's registered function.
    workflow: str | None = None
    #: A JSON path predicate on the input (``$.day == 1``).
    input: str | None = None
    #: The child workflows of the workflow at this path (the root's name,
    #: then each child's), instead of the roots.
    parent: tuple[str, ...] | None = None
    #: Only ids below this one (the keyset cursor).
    before: int | None = None
    #: How many runs are read (a count counts at most this many).
    limit: int = 100
