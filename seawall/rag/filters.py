"""Metadata filters: which documents a search may return.

A filter is a JSON object of conditions on document fields (the loader's
metadata, custom fields given at ingestion, and ``source``), all of which
must hold, in the style of MongoDB/Chroma/Pinecone filters:

* ``{"lang": "en"}``: equal; ``{"tags": "faq"}`` also matches a list field holding it
* ``{"year": {"$gte": 2020, "$lt": 2024}}``: ``$eq $ne $gt $gte $lt $lte``
* ``{"team": {"$in": ["core", "infra"]}}``, ``$nin``; ``{"draft": {"$exists": false}}``
* ``{"source": {"$prefix": "docs/ops/"}}``
* ``{"$or": [{...}, {...}]}``, ``{"$and": [...]}``, ``{"$not": {...}}``

Filters are checked once per document, not per chunk, and select chunks
through a mask both indexes honour (seawall/rag/index.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from seawall.api.limits import depth_exceeds

__all__ = ["MAX_DEPTH", "FilterError", "compile_filter"]

Predicate = Callable[[Mapping[str, Any]], bool]

# JSON levels (objects and lists) a filter may nest: far more than any real
# filter needs, and far below what would exhaust the interpreter's stack when
# the filter is compiled (recursively) and evaluated (nested closures).
MAX_DEPTH = 32


class FilterError(ValueError):
    """The filter is malformed; the message says where."""


def _cmp(op: str, want: Any) -> Callable[[Any], bool]:
    def ordered(test: Callable[[Any, Any], bool]) -> Callable[[Any], bool]:
        if isinstance(want, bool) or not isinstance(want, int | float | str):
            raise FilterError(f"{op} needs a number or a string, not {want!r}")

        def check(have: Any) -> bool:
            try:
                return (isinstance(have, type(want)) or (
                    isinstance(have, int | float) and isinstance(want, int | float))) and bool(
                    test(have, want))
            except TypeError:
                return False
        return check

    match op:
        case "$eq":
            return lambda have: have == want or (isinstance(have, list) and want in have)
        case "$ne":
            return lambda have: not (have == want or (isinstance(have, list) and want in have))
        case "$gt":
            return ordered(lambda a, b: a > b)
        case "$gte":
            return ordered(lambda a, b: a >= b)
        case "$lt":
            return ordered(lambda a, b: a < b)
        case "$lte":
            return ordered(lambda a, b: a <= b)
        case "$in" | "$nin":
            if not isinstance(want, list):
                raise FilterError(f"{op} needs a list, not {want!r}")
            # A set for the scalars: a long list checked against every document
            # must not cost its length each time.
            scalars = frozenset(w for w in want if not isinstance(w, list | dict))
            others = [w for w in want if isinstance(w, list | dict)]

            def member(have: Any) -> bool:
                values = have if isinstance(have, list) else [have]
                return any(v in others if isinstance(v, list | dict) else v in scalars
                           for v in values)
            return member if op == "$in" else (lambda have: not member(have))
        case "$prefix":
            if not isinstance(want, str):
                raise FilterError(f"$prefix needs a string, not {want!r}")
            return lambda have: isinstance(have, str) and have.startswith(want)
        case _:
            raise FilterError(f"unknown operator {op!r} (known: $eq $ne $gt $gte $lt $lte "
                              "$in $nin $exists $prefix)")


_MISSING = object()


def _exists(name: str, want: bool) -> Predicate:
    return lambda doc: (name in doc) is want


def _value_test(name: str, test: Callable[[Any], bool], negative: bool) -> Predicate:
    """A missing field fails a positive test and passes a negative one ($ne, $nin)."""
    def check(doc: Mapping[str, Any]) -> bool:
        value = doc.get(name, _MISSING)
        return negative if value is _MISSING else test(value)
    return check


def _field(name: str, cond: Any) -> Predicate:
    if not isinstance(cond, Mapping) or not cond:
        return _value_test(name, _cmp("$eq", cond), negative=False)
    checks: list[Predicate] = []
    for op, want in cond.items():
        if op == "$exists":
            if not isinstance(want, bool):
                raise FilterError(f"{name}.$exists needs true or false")
            checks.append(_exists(name, want))
            continue
        try:
            test = _cmp(op, want)
        except FilterError as e:
            raise FilterError(f"{name}: {e}") from None
        checks.append(_value_test(name, test, negative=op in ("$ne", "$nin")))
    return _all(checks)


def _all(parts: list[Predicate]) -> Predicate:
    return lambda doc: all(p(doc) for p in parts)


def _any(parts: list[Predicate]) -> Predicate:
    return lambda doc: any(p(doc) for p in parts)


def _negate(part: Predicate) -> Predicate:
    return lambda doc: not part(doc)


def _always(doc: Mapping[str, Any]) -> bool:
    return True


def compile_filter(spec: Mapping[str, Any] | None) -> Predicate | None:
    """A predicate over a document's fields, or None for no filter."""
    if spec is None or spec == {}:
        return None
    if not isinstance(spec, Mapping):
        raise FilterError("a filter is a JSON object of field conditions")
    if depth_exceeds(spec, MAX_DEPTH):
        raise FilterError(f"the filter nests more than {MAX_DEPTH} levels of objects and lists")
    return _compile(spec)


def _compile(spec: Mapping[str, Any]) -> Predicate:
    parts: list[Predicate] = []
    for key, cond in spec.items():
        if key in ("$and", "$or"):
            if not isinstance(cond, list) or not cond:
                raise FilterError(f"{key} needs a non-empty list of filters")
            subs = [_compile_sub(c) for c in cond]
            parts.append(_all(subs) if key == "$and" else _any(subs))
        elif key == "$not":
            parts.append(_negate(_compile_sub(cond)))
        elif key.startswith("$"):
            raise FilterError(f"unknown top-level operator {key!r} (known: $and $or $not)")
        else:
            parts.append(_field(key, cond))
    return _all(parts)


def _compile_sub(spec: Any) -> Predicate:
    if spec is None:
        return _always
    if not isinstance(spec, Mapping):
        raise FilterError("a filter is a JSON object of field conditions")
    return _compile(spec) if spec else _always
