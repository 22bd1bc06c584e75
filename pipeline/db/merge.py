"""The newest-value-wins merge that keeps facts over time (pure: no I/O).

Every content field of a merged row (an author, a track, a work, ...) holds the newest value any
payload carried for it. A payload that does not carry a field (`None`: absent, null, hidden or
unusable) never changes it. So the stored row is a function of the *set* of payloads loaded,
whatever order they arrive in:

    value(field) = the value with the greatest (rank, fetch time) among payloads that carry it

`rank` lets a better kind of value win over a worse one whatever its age (a real `create_time`
over the estimate from the aweme_id). Equal rank and time with different values (two payloads
fetched in the same microsecond) are settled by the value itself, so the result still does not
depend on order; `ingest reprocess` instead lets the re-flattened value win such a tie, since
the same payload read by a better flattener is the better reading.

Per-field fetch times are kept in the row's `field_seen_at` (only where they differ from the
row's `last_seen_at`, so a row that every payload fills completely stores nothing extra).
Children lists (hashtags, images, categories) are fields too: their value is the whole list,
as stored (the child rows' columns). Their stored value is read back only where a tie can
replace it (`ingest reprocess`); elsewhere only its time is, and `STORED_CHILDREN` stands for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def _rank_one(_: Any) -> int:
    return 1


@dataclass(frozen=True, slots=True)
class Field:
    """One merged field. `columns` are the table columns its value (a tuple when several)
    is written to; a children field has none (its caller writes the child table)."""

    name: str
    columns: tuple[str, ...]
    rank: Callable[[Any], int] = _rank_one

    @property
    def is_children(self) -> bool:
        return not self.columns


# A stored children value that was not read back (only its time was): a tie cannot tell whether
# a candidate equals it.
STORED_CHILDREN = object()


@dataclass(frozen=True, slots=True)
class Candidate:
    """What one payload says about one row: field name -> value (None: says nothing)."""

    seen_at: datetime
    values: Mapping[str, Any]


@dataclass(slots=True)
class MergedRow:
    values: dict[str, Any]
    times: dict[str, datetime]
    first_seen_at: datetime
    last_seen_at: datetime
    changed: set[str] = field(default_factory=set)  # fields whose value or time moved
    inserted: bool = False
    retimed: bool = False  # some field's time moved (`field_seen_at` may change)

    @property
    def written(self) -> bool:
        """Whether anything of the row changes: its columns or its children."""
        return self.inserted or bool(self.changed)


@dataclass(frozen=True, slots=True)
class MergeSpec:
    fields: tuple[Field, ...]
    columns: tuple[str, ...] = field(init=False)  # every field's table columns, in order
    children: frozenset[str] = field(init=False)  # names of the children fields
    plain_rank: frozenset[str] = field(init=False)  # names of the fields of the default rank
    layout: tuple[tuple[str, tuple[str, ...]], ...] = field(init=False)  # (name, columns)

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(c for f in self.fields for c in f.columns))
        object.__setattr__(
            self, "plain_rank", frozenset(f.name for f in self.fields if f.rank is _rank_one)
        )
        layout = tuple((f.name, f.columns) for f in self.fields if not f.is_children)
        object.__setattr__(self, "layout", layout)
        object.__setattr__(
            self, "children", frozenset(f.name for f in self.fields if not f.columns)
        )

    def stored(
        self, row: Mapping[Any, Any], children: Mapping[str, Any] | None = None
    ) -> MergedRow:
        """The merge state of a stored row (its columns and `field_seen_at`); `children`: the
        stored value of children fields, where read back (`STORED_CHILDREN` otherwise)."""
        seen = row["field_seen_at"] or {}
        last: datetime = row["last_seen_at"]
        values: dict[str, Any] = {}
        times: dict[str, datetime] = {}
        for f in self.fields:
            if f.is_children:
                if f.name in seen:
                    known = children.get(f.name) if children else None
                    values[f.name] = STORED_CHILDREN if known is None else known
                    times[f.name] = datetime.fromisoformat(seen[f.name])
                continue
            value = _value(f, row)
            if value is not None:
                values[f.name] = value
                times[f.name] = datetime.fromisoformat(seen[f.name]) if f.name in seen else last
        return MergedRow(values, times, row["first_seen_at"], last)

    def merge(
        self,
        stored: MergedRow | None,
        candidates: Iterable[Candidate],
        *,
        replace_ties: bool = False,
    ) -> MergedRow:
        """Fold `candidates` into `stored` (None: a new row). `changed` names the fields whose
        value or time moved; `inserted` is set for a new row."""
        ordered = sorted(candidates, key=lambda c: c.seen_at)
        if stored is None and len(ordered) == 1:
            return self._new(ordered[0])
        if stored is None:
            first = ordered[0].seen_at
            row = MergedRow({}, {}, first, first, inserted=True)
        else:
            row = MergedRow(
                dict(stored.values), dict(stored.times), stored.first_seen_at, stored.last_seen_at
            )
        values, times, changed = row.values, row.times, row.changed
        plain = self.plain_rank
        for candidate in ordered:
            at, given = candidate.seen_at, candidate.values
            for f in self.fields:
                name = f.name
                value = given.get(name)
                if value is None:
                    continue
                # `_wins`, inlined (this loop is most of a batch's merge): for a field of the
                # default rank, (rank, time) compare as the times do.
                current = values.get(name)
                if current is not None:  # (no value yet: the candidate's wins)
                    if name in plain:
                        old = times[name]
                        if at != old:
                            if at < old:
                                continue
                        elif not _wins_tie(value, current, replace_ties):
                            continue
                    elif not _wins(f, row, value, at, replace_ties):
                        continue
                if times.get(name) != at:
                    changed.add(name)
                    row.retimed = True
                elif current != value:
                    changed.add(name)
                values[name] = value
                times[name] = at
            if at < row.first_seen_at:
                row.first_seen_at = at
                changed.add("first_seen_at")
            if at > row.last_seen_at:
                row.last_seen_at = at
                changed.add("last_seen_at")
        return row

    def columns_changed(self, row: MergedRow) -> bool:
        """Whether the row's own columns change (`written` less a children value replaced at
        the same time: that changes only the child rows)."""
        return row.inserted or row.retimed or any(name not in self.children for name in row.changed)

    def _new(self, candidate: Candidate) -> MergedRow:
        """A new row from one payload: what the general fold below gives, without its
        comparisons (the common case of a first load)."""
        at = candidate.seen_at
        values = {f.name: v for f in self.fields if (v := candidate.values.get(f.name)) is not None}
        return MergedRow(
            values, dict.fromkeys(values, at), at, at, changed=set(values), inserted=True
        )

    def columns_of(self, row: MergedRow) -> dict[str, Any]:
        """The row as table columns: content, first/last seen and `field_seen_at`."""
        out: dict[str, Any] = {}
        values = row.values
        for name, columns in self.layout:
            value = values.get(name)
            if len(columns) == 1:
                out[columns[0]] = value
            else:
                for column, part in zip(columns, value or (None,) * len(columns), strict=True):
                    out[column] = part
        last, children = row.last_seen_at, self.children
        seen = {
            name: at.isoformat()
            for name, at in sorted(
                (name, at) for name, at in row.times.items() if at != last or name in children
            )
        }
        out["field_seen_at"] = seen or None
        out["first_seen_at"] = row.first_seen_at
        out["last_seen_at"] = row.last_seen_at
        return out


def _value(f: Field, row: Mapping[Any, Any]) -> Any:
    if len(f.columns) == 1:
        return row[f.columns[0]]
    parts = tuple(row[c] for c in f.columns)
    return None if parts[0] is None else parts


def _order(value: Any) -> str:
    return repr(value)


def _wins(f: Field, row: MergedRow, value: Any, at: datetime, replace_ties: bool) -> bool:
    current = row.values.get(f.name)
    if current is None:
        return True
    new, old = (f.rank(value), at), (f.rank(current), row.times[f.name])
    if new != old:
        return new > old
    return _wins_tie(value, current, replace_ties)


def _wins_tie(value: Any, current: Any, replace_ties: bool) -> bool:
    """Whether `value` wins over `current` of the same rank and time."""
    if current is STORED_CHILDREN:
        return replace_ties
    return value != current and (replace_ties or _order(value) > _order(current))


def scalar_fields(columns: Sequence[str]) -> tuple[Field, ...]:
    return tuple(Field(c, (c,)) for c in columns)
