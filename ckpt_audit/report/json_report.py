"""Every JSON document ckpt-audit writes, built from typed results (schemas: ckpt_audit/schemas/,
documented in docs/SCHEMAS.md).

Non-finite floats become ``null`` (JSON has no NaN). Fields may be added; these never change in
``ckpt-audit.audit/1``: checkpoint, format, d_model, verdict, norms[name, role, layer, dim, dtype,
convention, norm, ratio, min, max, mean, std, nonfinite, status, severity], findings[severity,
code, tensor, message].
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from json.encoder import encode_basestring_ascii as _string
from typing import TYPE_CHECKING, Any

from ckpt_audit.records import AuditReport, NormRecord
from ckpt_audit.report.findings import finding_to_dict

if TYPE_CHECKING:  # the run modules load only for run documents: an audit's JSON never needs them
    from ckpt_audit.runs.audit import CheckpointResult
    from ckpt_audit.runs.compare import Comparison, Diff
    from ckpt_audit.runs.trend import Trend

SCHEMA = "ckpt-audit.audit/1"
TREND_SCHEMA = "ckpt-audit.trend/1"
COMPARE_SCHEMA = "ckpt-audit.compare/1"
DIFF_SCHEMA = "ckpt-audit.diff/1"


def _num(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def dumps(doc: Mapping[str, Any]) -> str:
    """The document as indented JSON text (NaN never written): exactly
    ``json.dumps(doc, indent=2, allow_nan=False)``, and a last newline.

    Design note: with ``indent`` the standard library encodes in Python, through a generator per
    container (~20 ms for the 10^4 values of a DeepSeek-V3 report). :func:`_encode` writes the
    same text with one plain call per value; anything it does not know (a type, a NaN) goes to
    ``json.dumps`` itself, which then encodes the whole document or raises as it always did.
    ``tests/report/test_json_text.py`` holds the two to the same bytes."""
    out: list[str] = []
    try:
        _encode(doc, out, "\n")
    except _Unknown:
        return json.dumps(doc, indent=2, allow_nan=False) + "\n"
    out.append("\n")
    return "".join(out)


class _Unknown(Exception):
    """A value :func:`_encode` leaves to ``json.dumps``."""


#: The JSON text of a value of exactly these types, by C functions (no Python frame per value);
#: a float's text is checked against :data:`_NONFINITE` afterwards (JSON has no NaN).
_TEXT: dict[type, Any] = {
    str: _string, float: float.__repr__, int: int.__repr__,
    bool: {True: "true", False: "false"}.__getitem__, type(None): {None: "null"}.__getitem__,
}
#: ``float.__repr__`` of the non-finite floats: no other value's text is one of these.
_NONFINITE = frozenset({"nan", "inf", "-inf"})


def _scalar(obj: Any) -> str | None:
    """The JSON text of a str, int, float, bool or None (``None`` for anything else)."""
    text_of = _TEXT.get(type(obj))
    if text_of is None:
        return _string(obj) if isinstance(obj, str) else None  # a str enum: json writes its value
    text: str = text_of(obj)
    if text in _NONFINITE:
        raise _Unknown
    return text


def _encode(obj: Any, out: list[str], newline: str) -> None:
    """Append the indented JSON text of ``obj``; ``newline`` is a newline and the indent of the
    line ``obj`` starts on."""
    text = _scalar(obj)
    if text is not None:
        out.append(text)
        return
    kind = type(obj)
    if kind is not dict and kind is not list and kind is not tuple:
        raise _Unknown
    if not obj:
        out.append("{}" if kind is dict else "[]")
        return
    inner = newline + "  "
    values: Iterable[Any]
    if kind is dict:
        if any(type(key) is not str for key in obj):
            raise _Unknown
        sep = "," + inner
        heads = [sep + k + ": " for k in map(_string, obj)]
        heads[0] = "{" + inner + heads[0][len(sep):]
        values = obj.values()
    else:
        heads = ["," + inner] * len(obj)
        heads[0] = "[" + inner
        values = obj
    texts = _TEXT
    for head, value in zip(heads, values, strict=True):
        out.append(head)
        text_of = texts.get(type(value))
        if text_of is not None:
            text = text_of(value)
            if text in _NONFINITE:
                raise _Unknown
            out.append(text)
        elif type(value) is list and value and _flat_list(value, out, inner):
            continue
        else:
            _encode(value, out, inner)
    out.append(newline + ("}" if kind is dict else "]"))


def _flat_list(items: list[Any], out: list[str], newline: str) -> bool:
    """Append a non-empty list of plain scalars (a channel's ``[index, value]`` pair, most
    often) in one piece and return True; False, with nothing appended, for any other list."""
    funcs: list[Any] = [_TEXT.get(type(x)) for x in items]
    if None in funcs:
        return False
    texts = [f(x) for f, x in zip(funcs, items, strict=True)]
    if not _NONFINITE.isdisjoint(texts):
        raise _Unknown
    inner = newline + "  "
    out.append("[" + inner + ("," + inner).join(texts) + newline + "]")
    return True


def norm_to_dict(rec: NormRecord) -> dict[str, Any]:
    s = rec.stats
    return {
        "name": rec.name, "role": rec.role.value, "layer": rec.layer, "dim": s.dim,
        "dtype": rec.dtype, "convention": rec.convention.value, "norm": _num(s.norm),
        "ratio": _num(s.ratio), "min": _num(s.min), "max": _num(s.max), "mean": _num(s.mean),
        "std": _num(s.std), "nonfinite": s.nonfinite, "near_zero": s.near_zero,
        "extreme": [[i, _num(v)] for i, v in s.extreme],
        "spread": _num(s.spread), "negative": _num(s.negative),
        "status": rec.status.value, "severity": rec.severity.value,
        "reference_norm": None if rec.reference_norm is None else _num(rec.reference_norm),
    }


def report_to_dict(report: AuditReport,
                   acceptance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``ckpt-audit.audit/1`` document (with ``acceptance`` when a probe was run)."""
    final = report.final
    doc = {
        "schema": SCHEMA,
        "checkpoint": report.checkpoint,
        "format": report.format,
        "d_model": report.d_model,
        "d_model_source": report.d_model_source,
        "init_norm": math.sqrt(report.d_model) if report.d_model else None,
        "convention": report.convention.value,
        "policy": report.policy_name,
        "verdict": report.verdict,
        "final": final.name if final else None,
        "final_ratio": _num(final.stats.ratio) if final else None,
        "tensors": report.tensors_total,
        "bytes_read": report.bytes_read,
        "norms": [norm_to_dict(r) for r in report.norms],
        "skipped": [
            {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "reason": t.reason}
            for t in report.skipped
        ],
        "findings": [finding_to_dict(f) for f in report.findings],
        **{k: v for k, v in report.extra.items() if k not in {"device"}},
    }
    if acceptance is not None:
        doc["acceptance"] = dict(acceptance)
    return doc


def render_json(report: AuditReport) -> str:
    return dumps(report_to_dict(report))


def checkpoint_to_dict(res: CheckpointResult, tracked: tuple[str, ...],
                       prev: dict[str, float], trend: Trend | None = None) -> dict[str, Any]:
    """One checkpoint of a trend; ``prev`` (updated) holds each gain's last finite ratio.

    With ``trend``: each gain's ``rate`` and the checkpoint's ``layers`` (docs/SIGNALS.md)."""
    gains: dict[str, Any] = {}
    for name in tracked:
        rec = res.gains().get(name)
        if rec is None:
            continue
        ratio = rec.stats.ratio
        change = (ratio / prev[name] - 1.0) if name in prev and prev[name] else None
        gains[name] = {"role": rec.role.value, "layer": rec.layer, "ratio": _num(ratio),
                       "norm": _num(rec.stats.norm), "status": rec.status.value,
                       "severity": rec.severity.value, "change": _num(change),
                       "spread": _num(rec.stats.spread), "negative": _num(rec.stats.negative),
                       "rate": _num(trend.rate(res.checkpoint.step, name))
                       if trend is not None and res.report is not None else None}
        if math.isfinite(ratio):
            prev[name] = ratio
    col = trend.collective(trend.point(res.checkpoint.step)) \
        if trend is not None and res.report is not None else None
    return {
        "path": res.checkpoint.path, "name": res.checkpoint.name, "step": res.checkpoint.step,
        "layout": res.checkpoint.layout, "verdict": res.verdict,
        "final_ratio": _num(res.final_ratio), "complete": res.checkpoint.complete,
        "problems": list(res.checkpoint.problems), "error": res.error, "gains": gains,
        "layers": {"count": col.count, "median": _num(col.median), "spread": _num(col.spread),
                   "shrinking": col.shrinking} if col else None,
        "findings": [finding_to_dict(f) for f in res.findings],
    }


def trend_to_dict(trend: Trend) -> dict[str, Any]:
    """The ``ckpt-audit.trend/1`` document."""
    prev: dict[str, float] = {}
    if trend.start is not None:  # the first checkpoint's change is against the known start
        prev = {n: g.ratio for n, g in trend.start.gains.items() if math.isfinite(g.ratio)}
    ref = trend.reference
    return {
        "schema": TREND_SCHEMA, "run": trend.run, "verdict": trend.verdict,
        "tracked": list(trend.tracked),
        "reference": {"kind": trend.reference_kind, "label": ref.name if ref else None,
                      "step": ref.step if ref else None, "note": trend.reference_note},
        "signal_thresholds": asdict(trend.signals),
        "checkpoints": [checkpoint_to_dict(r, trend.tracked, prev, trend)
                        for r in trend.results],
        "signals": [{"step": s, **finding_to_dict(f)} for s, f in trend.signal_steps],
        "first_out_of_band": dict(trend.first_out_of_band),
        "jump_threshold": trend.jump_threshold,
        "jumps": [{"name": j.name, "step_from": j.step_from, "step_to": j.step_to,
                   "ratio_from": j.ratio_from, "ratio_to": j.ratio_to, "change": _num(j.change)}
                  for j in trend.jumps],
        "findings": [finding_to_dict(f) for f in trend.findings],
        "gain_reference": reference_of(r.report for r in trend.results),
    }


def reference_of(reports: Any) -> dict[str, Any]:
    """The top-level ``reference`` of a document over several audits: what their ratios are
    measured against (the same for every audit of one command)."""
    for rep in reports:
        if rep is not None and rep.extra.get("reference"):
            return dict(rep.extra["reference"])
    return {"kind": "init"}


def compare_to_dict(cmp: Comparison) -> dict[str, Any]:
    """The ``ckpt-audit.compare/1`` document (the first run is the reference)."""
    from ckpt_audit.runs.compare import audited_by_step, matching_steps

    steps = matching_steps([r for _, r in cmp.runs])
    by = [audited_by_step(r) for _, r in cmp.runs]
    return {
        "schema": COMPARE_SCHEMA, "runs": [name for name, _ in cmp.runs],
        "reference": cmp.runs[0][0] if cmp.runs else None, "tolerance": cmp.tolerance,
        "gain_reference": reference_of(r.report for _, results in cmp.runs for r in results),
        "verdict": cmp.verdict, "matching_steps": steps,
        "rows": [{"step": s, "final_ratio": [_num(b[s].final_ratio) for b in by],
                  "verdict": [b[s].verdict for b in by]} for s in steps],
        "first_divergence": [None if d is None else {
            "run": d.other, "step": d.step, "name": d.name, "role": d.role, "layer": d.layer,
            "ratio_reference": _num(d.ratio_reference), "ratio_other": _num(d.ratio_other),
            "difference": _num(d.difference)} for d in cmp.divergences],
        "findings": [finding_to_dict(f) for f in cmp.findings],
        "checkpoints": [[{"step": r.checkpoint.step, "name": r.checkpoint.name,
                          "path": r.checkpoint.path, "verdict": r.verdict, "error": r.error,
                          "findings": [finding_to_dict(f) for f in r.findings]}
                         for r in results] for _, results in cmp.runs],
    }


def diff_to_dict(diff: Diff) -> dict[str, Any]:
    """The ``ckpt-audit.diff/1`` document."""
    a, b = diff.a, diff.b
    return {
        "schema": DIFF_SCHEMA, "a": a.checkpoint, "b": b.checkpoint,
        "verdict_a": a.verdict, "verdict_b": b.verdict, "verdict": diff.verdict,
        "max_change": diff.max_change,
        "gains": [{"name": d.name, "role": d.role, "layer": d.layer, "ratio_a": _num(d.ratio_a),
                   "ratio_b": _num(d.ratio_b), "change": _num(d.change),
                   "relative": _num(d.relative), "status_a": d.status_a, "status_b": d.status_b}
                  for d in diff.rows],
        "findings": [finding_to_dict(f) for f in diff.findings],
        "findings_a": [finding_to_dict(f) for f in a.findings],
        "findings_b": [finding_to_dict(f) for f in b.findings],
        "reference": reference_of((a, b)),
    }


# Entry points of the dispatch (ckpt_audit.report.RENDERERS): (document, options) -> text.

def audit_json(doc: Any, opts: Any) -> str:
    return dumps(report_to_dict(doc.report, doc.acceptance))


def trend_json(doc: Trend, opts: Any) -> str:
    return dumps(trend_to_dict(doc))


def compare_json(doc: Comparison, opts: Any) -> str:
    return dumps(compare_to_dict(doc))


def diff_json(doc: Diff, opts: Any) -> str:
    return dumps(diff_to_dict(doc))
