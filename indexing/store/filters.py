"""The backend-neutral half of a search, written once: the filter spec and the query plan.

Each backend only translates a `SearchPlan` (stages, conditions, limits) into its own client's objects.

Filter spec: `{field: value | [values] | {"gte"|"gt"|"lte"|"lt": bound, ...}}`; every condition must hold.
- value: a string, an integer or true/false, matched exactly (decimals need a range);
- [values]: strings or integers (one kind), any of them matches;
- range: numbers, or ISO 8601 date-time strings on the datetime fields (`DATETIME_FIELDS`).
Anything else raises `FilterError` (a `StoreError`) naming the field, before any backend sees it.

Private collections: a document with an `owner` (`OWNER_FIELD`) is private to that user. Every search carries
its `viewer` (None: nobody in particular) and sees the documents without an owner plus the viewer's own; each
backend adds that rule to the query itself, ANDed with the caller's filter, so no filter spec (an `owner` or a
`doc_id` condition included) can widen what a viewer sees.
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .base import DATETIME_FIELDS, DENSE, OWNER_FIELD, SPARSE, FilterError, Hit, Sparse

RANGE_OPS = ("gte", "gt", "lte", "lt")
# The date-time forms both Qdrant clients parse (fromisoformat alone also takes e.g. "2024-W03").
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$")


@dataclass(frozen=True)
class Condition:
    key: str
    kind: str  # "eq", "any" or "range"
    value: object  # eq: str | int | bool; any: list[str] | list[int]; range: {op: bound}
    datetime: bool = False  # a range over a datetime field (bounds are ISO 8601 strings)


@dataclass(frozen=True)
class Stage:
    using: str  # the named vector: DENSE or SPARSE
    vector: list[float] | Sparse


@dataclass(frozen=True)
class SearchPlan:
    """One stage: query it directly with the filter. Two: prefetch `prefetch_limit` from each (each filtered)
    and fuse them with RRF (k=`RRF_K`) down to `limit`."""

    stages: tuple[Stage, ...]
    conditions: tuple[Condition, ...]
    limit: int
    viewer: str | None = None  # sees documents without an owner, and those whose owner is the viewer

    @property
    def hidden_owner(self) -> tuple[str, str | None]:
        """(field, viewer): the backends exclude points whose `field` is set and differs from `viewer`."""
        return OWNER_FIELD, self.viewer

    @property
    def fused(self) -> bool:
        return len(self.stages) > 1

    @property
    def prefetch_limit(self) -> int:
        return max(4 * self.limit, 20)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _match_value(key: str, value: object) -> str | int | bool:
    if isinstance(value, (str, int)):  # bool is an int
        return value
    if isinstance(value, float):
        raise FilterError(f"filter {key}: exact match needs a string, an integer or true/false, got {value!r}; "
                          f"use a range such as {{\"gte\": {value!r}, \"lte\": {value!r}}} for decimals")
    raise FilterError(f"filter {key}: expected a string, an integer, true/false, a list of strings or integers, "
                      f"or a range {{gte/gt/lte/lt: bound}}; got {_show(value)}")


def _any_values(key: str, values) -> list[str] | list[int]:
    values = list(values)
    for v in values:
        if not isinstance(v, str) and not _is_int(v):
            raise FilterError(f"filter {key}: a list matches any of its values, which must be strings or "
                              f"integers; got {_show(v)} in {_show(values)}")
    if len({isinstance(v, str) for v in values}) > 1:
        raise FilterError(f"filter {key}: list values must be all strings or all integers, got {_show(values)}")
    return values


def _range(key: str, bounds: Mapping, is_datetime: bool) -> dict:
    unknown = set(bounds) - set(RANGE_OPS)
    if unknown or not bounds:
        raise FilterError(f"filter {key}: range needs gte/gt/lte/lt, got {sorted(map(str, bounds))}")
    for op, bound in bounds.items():
        if is_datetime:
            ok = isinstance(bound, str) and _DATETIME.match(bound)
            if ok:
                try:
                    dt.datetime.fromisoformat(bound)
                except ValueError:
                    ok = False
            if not ok:
                raise FilterError(f"filter {key}: {op} must be an ISO 8601 date-time string such as "
                                  f"\"2024-01-31T00:00:00Z\", got {_show(bound)}")
        elif not (isinstance(bound, (int, float)) and not isinstance(bound, bool)):
            raise FilterError(f"filter {key}: {op} must be a number, got {_show(bound)}")
    return dict(bounds)


def parse_filter(spec: Mapping | None) -> tuple[Condition, ...]:
    """The spec as conditions, validated (see the module docstring); None or {} is no filter."""
    if spec is None:
        return ()
    if not isinstance(spec, Mapping):
        raise FilterError(f"filter must be an object {{field: value}}, got {_show(spec)}")
    conditions = []
    for key, value in spec.items():
        if not isinstance(key, str) or not key:
            raise FilterError(f"filter field names must be non-empty strings, got {_show(key)}")
        if isinstance(value, Mapping):
            is_datetime = key in DATETIME_FIELDS
            conditions.append(Condition(key, "range", _range(key, value, is_datetime), is_datetime))
        elif isinstance(value, (list, tuple, set, frozenset)):
            conditions.append(Condition(key, "any", _any_values(key, value)))
        else:
            conditions.append(Condition(key, "eq", _match_value(key, value)))
    return tuple(conditions)


def plan_search(*, dense: np.ndarray | None, sparse: Sparse | None, k: int,
                filter: Mapping | None = None, viewer: str | None = None) -> SearchPlan | None:
    """The neutral query: the filter checked first, then the stages; None when there is nothing to search
    with (no dense vector and no sparse terms)."""
    conditions = parse_filter(filter)
    stages = []
    if dense is not None:
        stages.append(Stage(DENSE, np.asarray(dense, dtype=np.float32).tolist()))
    if sparse is not None and sparse[0]:
        stages.append(Stage(SPARSE, (list(sparse[0]), list(sparse[1]))))
    if not stages:
        return None
    if viewer is not None and (not isinstance(viewer, str) or not viewer):
        raise FilterError(f"viewer must be a non-empty user name or None, got {_show(viewer)}")
    return SearchPlan(tuple(stages), conditions, k, viewer)


def to_hits(points) -> list[Hit]:
    """Scored points of either client (`.id`, `.score`, `.payload`) as hits."""
    return [Hit(id=str(p.id), score=float(p.score), payload=p.payload or {}) for p in points]
