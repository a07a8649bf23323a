"""The Hugging Face shard index (``*.index.json``): ``{"weight_map": {tensor name: shard file}}``.

The one reader of index files, for the safetensors and torch readers and for run discovery.
"""

from __future__ import annotations

from typing import Any

from ckpt_audit.errors import FormatError
from ckpt_audit.storage import Location

SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_INDEX = "pytorch_model.bin.index.json"


def weight_map(obj: Any, source: str) -> dict[str, str]:
    """The index's tensor → shard map; :class:`FormatError` unless it maps strings to strings."""
    return _checked(obj, source)[0]


def shard_names(obj: Any, source: str) -> list[str]:
    """The shard files an index names, sorted, each once."""
    return list(_checked(obj, source)[1])


#: The last weight map checked and its sorted shard names. A shard index is parsed once per
#: process (``read_json(shared=True)``) and then asked for by the completeness check, the reader
#: and its shard locations: one pass over its ~10^5 values instead of three. Held by identity
#: (the document is read-only to every caller, and held here so that its id is not reused).
_LAST: tuple[Any, tuple[str, ...]] = (None, ())


def _checked(obj: Any, source: str) -> tuple[dict[str, str], tuple[str, ...]]:
    global _LAST
    wm = obj.get("weight_map") if isinstance(obj, dict) else None
    last = _LAST
    if wm is not None and last[0] is wm:
        return wm, last[1]
    try:  # the set first: ~10^5 entries name a few hundred shards, each type checked once
        shards = set(wm.values()) if isinstance(wm, dict) else None
        ok = shards is not None and all(type(v) is str for v in shards)
    except TypeError:  # an unhashable value (a list, an object)
        ok = False
    if not ok:
        raise FormatError("index has no valid 'weight_map'", source)
    assert isinstance(wm, dict) and shards is not None
    _LAST = (wm, tuple(sorted(shards)))
    return wm, _LAST[1]


def shard_locations(folder: Location, index: Location,
                    wm: dict[str, str] | None = None) -> dict[str, Location]:
    """Every shard the index names, as locations inside ``folder``; refuses (naming the index) a
    shard outside the folder (absolute, ``..``, a symlink out: see ``Location.child``), missing,
    or named twice (``a.safetensors`` and ``./a.safetensors``). A checkpoint is a closed
    world."""
    names = shard_names({"weight_map": wm} if wm is not None else index.read_json(shared=True),
                        index.display)
    shards: dict[str, Location] = {}
    named: dict[str, str] = {}  # each file, by where it is, and the first name given to it
    for shard in names:
        try:
            child = folder.child(shard)
        except FormatError as exc:
            raise FormatError(f"index {exc.message}", index.display) from None
        if not child.exists():
            raise FormatError(f"index names a missing shard {shard!r}", index.display)
        first = named.setdefault(child.display, shard)
        if first != shard:
            raise FormatError(f"index names one shard twice, as {first!r} and {shard!r}",
                              index.display)
        shards[shard] = child
    return shards
