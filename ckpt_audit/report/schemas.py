"""The JSON Schemas of every document (shipped as ckpt_audit/schemas/*.json, draft 2020-12;
described in docs/SCHEMAS.md).

:func:`schema` loads one by its document name; :func:`validate` checks a document against the
schema its ``"schema"`` field names (needs the ``jsonschema`` package, imported when called).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

#: Document ``"schema"`` value -> schema file stem under ckpt_audit/schemas/.
DOCUMENTS = {
    "ckpt-audit.audit/1": "audit",
    "ckpt-audit.bands/1": "bands",
    "ckpt-audit.accept/1": "accept",
    "ckpt-audit.trend/1": "trend",
    "ckpt-audit.compare/1": "compare",
    "ckpt-audit.diff/1": "diff",
    "ckpt-audit.watch/1": "watch",
}
#: Schemas only referenced by others.
SHARED = ("finding", "verdict")
URN = "urn:ckpt-audit:schema:"


@cache
def schema(stem: str) -> dict[str, Any]:
    """The schema ``stem`` (``audit``, ``trend``, ``finding``, …) as a dict."""
    text = resources.files("ckpt_audit").joinpath("schemas", f"{stem}.json").read_text("utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


def validate(doc: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``doc`` matches its declared schema."""
    import jsonschema
    from referencing import Registry, Resource

    registry: Registry = Registry().with_resources(
        (URN + stem, Resource.from_contents(schema(stem)))
        for stem in (*DOCUMENTS.values(), *SHARED))
    stem = DOCUMENTS[doc["schema"]]
    jsonschema.Draft202012Validator(schema(stem), registry=registry).validate(doc)
