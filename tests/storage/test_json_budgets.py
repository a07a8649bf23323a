"""``loads_json``: its plain fast path accepts exactly what the strict parse accepts.

The strict parse (depth scan, a per-object hook refusing repeated keys, the digit budget) is the
definition; the fast path parses without the hook and proves the document shallow and free of
repeats by counting colons. Hypothesis writes documents of every depth, with colons, quotes and
backslashes inside strings, long integers, and repeated keys spliced into the text.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ckpt_audit.errors import FormatError
from ckpt_audit.storage import base
from ckpt_audit.storage.base import JSON_MAX_DEPTH, loads_json

SCALE = int(os.environ.get("CKPT_AUDIT_FUZZ", "1"))

text = st.text(st.sampled_from('ab:"\\{}[],é'), max_size=6)
scalars = (st.none() | st.booleans() | st.floats(allow_nan=False) | text
           | st.integers(-(10**70), 10**70))
documents = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12)


def strict(raw: bytes) -> Any:
    """The strict parse alone: the definition the fast path must agree with."""
    base._within_depth(raw, "x", "JSON")
    return base._strict_loads(raw, "x", "JSON")


def verdict(fn: Any, raw: bytes) -> tuple[str, Any]:
    try:
        return "ok", fn(raw)
    except FormatError as exc:
        return "refused", "appears twice" in exc.message


def dumps(doc: Any, repeat_in: int = -1) -> bytes:
    """``doc`` as JSON text; the ``repeat_in``-th non-empty object (in document order) writes
    its first key/value pair twice."""
    seen = [0]

    def enc(v: Any) -> str:
        if type(v) is dict and v:
            items = [f"{json.dumps(k, ensure_ascii=False)}: {enc(x)}" for k, x in v.items()]
            if seen[0] == repeat_in:
                items.insert(0, items[0])
            seen[0] += 1
            return "{" + ", ".join(items) + "}"
        if type(v) is list:
            return "[" + ", ".join(enc(x) for x in v) + "]"
        return json.dumps(v, ensure_ascii=False)

    return enc(doc).encode()


@settings(max_examples=500 * SCALE, deadline=None)
@given(documents, st.booleans(), st.integers(0, 50))
def test_the_fast_path_agrees_with_the_strict_parse(doc: Any, repeat: bool, pick: int) -> None:
    raw = dumps(doc, pick % 4 if repeat else -1)
    assert verdict(lambda r: loads_json(r, "x"), raw) == verdict(strict, raw), raw[:200]


@pytest.mark.parametrize("raw", [
    b'{"weight_map": {"a": "s1", "a": "s2"}}',
    b'{"a": 1, "a": 1}',
    b'{"m": {"k": {"x": 1, "x": 2}}}',
    b'[{"k": 1, "k": 2}]',
], ids=["index-entry", "top", "deep", "in-a-list"])
def test_repeated_keys_are_refused_at_every_depth(raw: bytes) -> None:
    with pytest.raises(FormatError, match="appears twice"):
        loads_json(raw, "x")


def test_colons_inside_strings_do_not_cost_a_valid_document_anything() -> None:
    raw = b'{"weight_map": {"a:b": "c:\\":d", "e": "f"}, "metadata": {"n": 1}}'
    assert loads_json(raw, "x") == json.loads(raw)


@pytest.mark.parametrize("raw", [
    b"[" * (JSON_MAX_DEPTH + 1) + b"]" * (JSON_MAX_DEPTH + 1),
    b'{"a": ' + b"1" * (base.JSON_MAX_DIGITS + 1) + b"}",
    b'{"a": [' + b"-" + b"9" * (base.JSON_MAX_DIGITS + 1) + b"]}",
], ids=["deep", "digits", "digits-in-a-list"])
def test_the_budgets_hold_on_flat_documents_too(raw: bytes) -> None:
    with pytest.raises(FormatError, match="budget|levels"):
        loads_json(raw, "x")


def _depth(v: Any) -> int:
    if type(v) is dict:
        return 1 + max(map(_depth, v.values()), default=0)
    if type(v) is list:
        return 1 + max(map(_depth, v), default=0)
    return 0


def _colons(v: Any) -> int:
    if type(v) is dict:
        return len(v) + sum(map(_colons, v.values()))
    if type(v) is list:
        return sum(map(_colons, v))
    return 0


@settings(max_examples=300 * SCALE, deadline=None)
@given(documents)
def test_the_scan_counts_depth_and_colons_exactly_whatever_the_strings_hold(doc: Any) -> None:
    """Brackets, quotes, colons and backslashes inside strings never count: the scan's depth
    and colon count equal a walk of the parsed document's."""
    raw = json.dumps(doc, ensure_ascii=False).encode()
    assert base.json_scan(raw, JSON_MAX_DEPTH) == (_depth(doc), _colons(doc)), raw[:200]
