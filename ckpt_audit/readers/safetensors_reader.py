"""safetensors checkpoints: one file, a folder of files, or a sharded folder with an index.

Only headers are parsed up front (two small reads per shard); :meth:`read_many` then fetches
just the byte ranges of the tensors asked for, merged per shard. torch is never imported.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from ckpt_audit.errors import FormatError
from ckpt_audit.readers.base import CheckpointReader
from ckpt_audit.readers.dtypes import decode
from ckpt_audit.readers.hf_index import SAFETENSORS_INDEX, shard_locations, weight_map
from ckpt_audit.readers.safetensors_format import (
    SafetensorsHeader,
    TensorEntry,
    header_length,
    parse_header,
    parse_headers,
)
from ckpt_audit.readers.signatures import SAFETENSORS_SUFFIX, safetensors_folder
from ckpt_audit.records import TensorInfo
from ckpt_audit.storage import ByteSource, Location

INDEX_NAME = SAFETENSORS_INDEX
SINGLE_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def _is_safetensors(name: str) -> bool:
    return name.endswith(SAFETENSORS_SUFFIX)


class SafetensorsReader(CheckpointReader):
    """Reads safetensors headers and the byte ranges of requested tensors."""

    format = "safetensors"
    config_source = "config.json"

    def __init__(self, loc: Location) -> None:
        super().__init__(loc)
        self._folder = loc if loc.is_dir() else None
        self._files = self._shard_locations(loc)
        self._sources: dict[str, ByteSource] = {}
        self._headers: dict[str, SafetensorsHeader] = {}
        self._shard_of: dict[str, str] = {}
        self._infos: _LazyInfos | None = None

    @classmethod
    def detect(cls, loc: Location) -> bool:
        if loc.is_dir():
            return safetensors_folder(loc.listdir())
        if _is_safetensors(loc.name):
            return True
        # an extension-less file: sniff the JSON header start after the 8-byte length
        try:
            src = loc.open()
            try:
                head = src.read(0, min(src.size(), 9))
            finally:
                src.close()
        except FormatError:
            return False
        return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 10**8

    # -- discovery of the files --------------------------------------------------------------
    def _shard_locations(self, loc: Location) -> dict[str, Location]:
        if not loc.is_dir():
            return {loc.name: loc}
        index = loc.child(INDEX_NAME)
        if index.exists():
            return self._from_index(loc, index)
        names = [n for n in loc.listdir() if _is_safetensors(n)]
        if SINGLE_NAME in names:
            names = [SINGLE_NAME]
        if not names:
            raise FormatError("no .safetensors files in this folder", loc.display)
        return {n: loc.child(n) for n in names}

    def _from_index(self, folder: Location, index: Location) -> dict[str, Location]:
        self._index_map: dict[str, str] = weight_map(index.read_json(shared=True), index.display)
        return shard_locations(folder, index, self._index_map)

    # -- headers ------------------------------------------------------------------------------
    def _source(self, shard: str) -> ByteSource:
        src = self._sources.get(shard)
        if src is None:
            src = self._files[shard].open()
            self._sources[shard] = src
        return src

    def _header(self, shard: str) -> SafetensorsHeader:
        hdr = self._headers.get(shard)
        if hdr is None:
            hdr = parse_header(*self._header_bytes(shard))
            self._headers[shard] = hdr
        return hdr

    def _header_bytes(self, shard: str) -> tuple[bytes, int, str]:
        """The JSON header of ``shard`` (the N bytes after its length), its file size and name."""
        src = self._source(shard)
        size = src.size()
        n = header_length(src.read(0, min(8, size)) if size else b"", size, src.name)
        return src.read(8, n), size, src.name

    def _all_headers(self) -> dict[str, SafetensorsHeader]:
        """Every shard's header, those not parsed yet parsed together (``parse_headers``: the
        same checks and the same first refusal, in shard order, as one by one)."""
        todo = [shard for shard in self._files if shard not in self._headers]
        if todo:
            self._headers.update(zip(todo, parse_headers(map(self._header_or_error, todo)),
                                     strict=True))
        return {shard: self._headers[shard] for shard in self._files}

    def _header_or_error(self, shard: str) -> tuple[bytes, int, str] | FormatError:
        """:meth:`_header_bytes`, or its refusal, raised in its turn by ``parse_headers``
        (after the refusal of any shard before it)."""
        try:
            return self._header_bytes(shard)
        except FormatError as exc:
            return exc

    def tensors(self) -> Mapping[str, TensorInfo]:
        if self._infos is None:
            where = self._where_by_index()
            if where is None:  # the headers and the index disagree, or there is no index
                where = self._where_by_headers()
                index_map = getattr(self, "_index_map", None)
                if index_map is not None and index_map.keys() - where.keys():
                    name = next(iter(sorted(index_map.keys() - where.keys())))
                    raise FormatError(
                        f"index maps {name!r} to {index_map[name]!r}, which does not hold it",
                        self._files[index_map[name]].display,
                    )
            self._shard_of = where
            self._infos = _LazyInfos(self, where)
        return self._infos

    def _where_by_headers(self) -> dict[str, str]:
        """Name → shard from the headers; a name in two files is refused."""
        where: dict[str, str] = {}
        for shard, hdr in self._all_headers().items():
            names = hdr.raw_names
            clash = where.keys() & names
            if clash:
                dup = min(clash)
                raise FormatError(f"tensor {dup!r} appears in two files "
                                  f"({self._files[where[dup]].display})",
                                  self._files[shard].display)
            where.update(dict.fromkeys(names, shard))
        return where

    def _where_by_index(self) -> dict[str, str] | None:
        """The index's own name → shard map, when the headers hold exactly what it says: each
        index entry's name is in its shard's header, and the headers hold as many names as the
        index has entries (the entries being distinct names, the two then match one to one: no
        name is missing, extra, or in two files). ``None`` otherwise, and :meth:`tensors` builds
        the map from the headers and names the disagreement.

        Design note: the index is walked in its own order, each name looked up in its shard's
        header table (~600 names). Its entries and names lie in memory in that order, so the
        walk streams through them; looking each header name up in the index instead reaches
        the index's 10^5 names in a scattered order, a cache miss each (memory-bound: 3x the
        time on a DeepSeek-V3)."""
        index_map = getattr(self, "_index_map", None)
        if index_map is None:
            return None
        held = {shard: hdr.raw_names for shard, hdr in self._all_headers().items()}
        if sum(map(len, held.values())) != len(index_map):
            return None
        names_of = map(held.__getitem__, index_map.values())
        return index_map if all(map(operator.contains, names_of, index_map)) else None

    def _entry(self, name: str) -> tuple[str, TensorEntry]:
        shard = self._shard_of[name]
        return shard, self._header(shard).entry(name)

    def metadata(self) -> dict[str, dict[str, str]]:
        """The ``__metadata__`` of each file (e.g. ``{"format": "pt"}``)."""
        return {shard: self._header(shard).metadata for shard in self._files}

    # -- values -------------------------------------------------------------------------------
    def read(self, name: str) -> np.ndarray:
        return self.read_many([name])[name]

    def read_many(self, names: Iterable[str]) -> dict[str, np.ndarray]:
        self.tensors()
        by_shard: dict[str, list[str]] = {}
        for name in names:
            if name not in self._shard_of:
                raise FormatError(f"no tensor named {name!r}", self.display)
            by_shard.setdefault(self._shard_of[name], []).append(name)
        out: dict[str, np.ndarray] = {}
        for shard, shard_names in by_shard.items():
            hdr = self._header(shard)
            entries = [hdr.entry(n) for n in shard_names]
            src = self._source(shard)
            blobs = src.read_ranges([(e.start, e.end - e.start) for e in entries])
            for n, e, raw in zip(shard_names, entries, blobs, strict=True):
                out[n] = decode(raw, e.dtype, e.shape, src.name)
        return out

    def config(self) -> dict[str, Any]:
        if self._folder is None:
            return {}
        cfg = self._folder.child(CONFIG_NAME)
        if not cfg.exists():
            return {}
        obj = cfg.read_json()
        if not isinstance(obj, dict):
            raise FormatError("config.json is not a JSON object", cfg.display)
        return obj

    def close(self) -> None:
        for src in self._sources.values():
            src.close()
        self._sources.clear()
        # drop the headers now (and the reader <-> infos cycle): ~10^5 small dicts for a large
        # checkpoint, freed here by reference counting instead of by a later collector pass
        self._headers.clear()
        self._shard_of = {}
        self._infos = None


class _LazyInfos(Mapping[str, TensorInfo]):
    """Every tensor name at once; a name's :class:`TensorInfo` (and the full check of its header
    entry) only when it is looked up. Discovery looks up the few hundred norm-named tensors."""

    def __init__(self, reader: SafetensorsReader, where: dict[str, str]) -> None:
        self._reader = reader
        self._where = where
        self._cache: dict[str, TensorInfo] = {}

    def __getitem__(self, name: str) -> TensorInfo:
        info = self._cache.get(name)
        if info is None:
            shard, e = self._reader._entry(name)
            info = TensorInfo(name, e.shape, e.dtype, self._reader._files[shard].display)
            self._cache[name] = info
        return info

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, name: object) -> bool:
        return name in self._where
