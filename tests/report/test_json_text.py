"""``json_report.dumps`` writes exactly what ``json.dumps(doc, indent=2, allow_nan=False)``
writes (plus a last newline), byte for byte, for real reports and for any JSON-like document;
what it does not know it leaves to ``json.dumps``, errors included."""

from __future__ import annotations

import enum
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ckpt_audit.core.audit import audit_checkpoint
from ckpt_audit.demo import write_demo_run
from ckpt_audit.report.json_report import dumps, report_to_dict


def _reference(doc: object) -> str:
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


class Colour(str, enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


scalars = (st.none() | st.booleans() | st.integers() | st.integers(-2**80, 2**80)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text()
           | st.sampled_from([Colour.RED, -0.0, 5e-324, 1e300, "é\u2028\x00\"\\"]))
documents = st.recursive(
    scalars,
    lambda inner: (st.lists(inner, max_size=4) | st.tuples(inner, inner)
                   | st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(documents)
def test_any_document_is_written_as_json_writes_it(doc: object) -> None:
    assert dumps({"doc": doc}) == _reference({"doc": doc})


def test_real_reports_are_written_as_json_writes_them(tmp_path) -> None:
    paths = write_demo_run(str(tmp_path))
    for path in paths.values():
        doc = report_to_dict(audit_checkpoint(path))
        assert doc["norms"] and dumps(doc) == _reference(doc)


@pytest.mark.parametrize("doc", [{1: "int key"}, {"x": Level.HIGH}, {"x": {2.5: None}},
                                 {"x": [object()]}, {"x": math.nan}, {"x": [math.inf]}])
def test_what_it_does_not_know_goes_to_json(doc: dict) -> None:
    try:
        expected = _reference(doc)
    except (TypeError, ValueError) as exc:
        with pytest.raises(type(exc)):
            dumps(doc)
    else:
        assert dumps(doc) == expected
