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
    wm = obj.get("weight_map") if isinstance(obj, dict) else None
    try:  # the set first: ~10^5 entries name a few hundred shards, each type checked once
        ok = isinstance(wm, dict) and all(type(v) is str for v in set(wm.values()))
    except TypeError:  # an unhashable value (a list, an object)
        ok = False
    if not ok:
        raise FormatError("index has no valid 'weight_map'", source)
    return wm  # type: ignore[return-value]


def shard_names(obj: Any, source: str) -> list[str]:
    """The shard files an index names, sorted, each once."""
    return sorted(set(weight_map(obj, source).values()))


def shard_locations(folder: Location, index: Location,
                    wm: dict[str, str] | None = None) -> dict[str, Location]:
    """Every shard the index names, as locations inside ``folder``; refuses (naming the index) a
    shard outside the folder (absolute, ``..``, a symlink out: see ``Location.child``) or
    missing. A checkpoint is a closed world."""
    if wm is None:
        wm = weight_map(index.read_json(shared=True), index.display)
    shards: dict[str, Location] = {}
    for shard in sorted(set(wm.values())):
        try:
            child = folder.child(shard)
        except FormatError as exc:
            raise FormatError(f"index {exc.message}", index.display) from None
        if not child.exists():
            raise FormatError(f"index names a missing shard {shard!r}", index.display)
        shards[shard] = child
    return shards
