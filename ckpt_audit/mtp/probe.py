"""Probe files: the token sequences acceptance is measured on.

Accepted forms, detected from the first non-blank line:

- JSONL: one object per line with ``input_ids`` (a list of ints) or ``text`` (a string,
  tokenized with the checkpoint folder's ``tokenizer.json`` through the ``tokenizers`` library,
  special tokens added as that tokenizer's post-processor says);
- plain text: one document per line, tokenized the same way.

Every id is checked against the model's vocabulary; a document shorter than 2 tokens has no
draft/verifier pair and is dropped; a probe with no usable document is an error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ckpt_audit.errors import CkptAuditError


def _tokenizer(ckpt: str, probe: str) -> Any:
    from tokenizers import Tokenizer

    folder = Path(ckpt) if Path(ckpt).is_dir() else Path(ckpt).parent
    tok = folder / "tokenizer.json"
    if not tok.is_file():
        raise CkptAuditError(f"the probe has text but {tok} does not exist; give input_ids "
                             "instead, or put the model's tokenizer.json in its folder", probe)
    try:
        return Tokenizer.from_file(str(tok))
    except Exception as exc:
        raise CkptAuditError(f"cannot load tokenizer.json: {exc}", str(tok)) from None


def read_probe(probe: str, ckpt: str, vocab_size: int, *, max_tokens: int | None = None,
               max_docs: int | None = None, context: int | None = None) -> list[list[int]]:
    """Token id sequences of the probe, truncated to ``max_tokens`` (and the model's context)."""
    path = Path(probe)
    if not path.is_file():
        raise CkptAuditError("probe file does not exist", probe)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise CkptAuditError("probe file is not UTF-8 text", probe) from None
    first = next((ln for ln in lines if ln.strip()), "")
    jsonl = first.lstrip().startswith("{")
    tok: Any = None
    limit = min(x for x in (max_tokens, context) if x) if (max_tokens or context) else None
    seqs: list[list[int]] = []
    for lineno, line in enumerate(lines, start=1):
        if max_docs is not None and len(seqs) >= max_docs:
            break
        if not line.strip():
            continue
        if jsonl:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CkptAuditError(f"line {lineno}: not JSON ({exc.msg})", probe) from None
            if not isinstance(obj, dict) or not ("input_ids" in obj or "text" in obj):
                raise CkptAuditError(f"line {lineno}: needs an 'input_ids' or 'text' field",
                                     probe)
            if "input_ids" in obj:
                ids = obj["input_ids"]
                if not isinstance(ids, list) or not all(
                        isinstance(i, int) and not isinstance(i, bool) for i in ids):
                    raise CkptAuditError(f"line {lineno}: input_ids must be a list of ints",
                                         probe)
            else:
                tok = tok or _tokenizer(ckpt, probe)
                ids = tok.encode(str(obj["text"])).ids
        else:
            tok = tok or _tokenizer(ckpt, probe)
            ids = tok.encode(line).ids
        bad = [i for i in ids if i < 0 or i >= vocab_size]
        if bad:
            raise CkptAuditError(f"line {lineno}: token id {bad[0]} is outside the model's "
                                 f"vocabulary [0, {vocab_size})", probe)
        if limit:
            ids = ids[:limit]
        if len(ids) >= 2:
            seqs.append(list(ids))
    if not seqs:
        raise CkptAuditError("empty probe: no document with at least 2 tokens", probe)
    return seqs
