"""llama2.c model files (``model.bin``): v0 (legacy), v1 (float32) and v2 (Q8_0).

Layouts, from llama2.c's ``export.py`` (``legacy_export``, ``version1_export``,
``version2_export``) and ``run.c``'s ``memory_map_weights``:

- v0: seven int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a
  negative vocab_size means an unshared classifier), then float32: token embeddings [V, d],
  rms_att [L, d], wq [L, d, d], wk [L, kv, d], wv [L, kv, d], wo [L, d, d], rms_ffn [L, d],
  w1 [L, h, d], w2 [L, d, h], w3 [L, h, d], rms_final [d], freq_cis_real and freq_cis_imag
  [seq_len, head_size/2] each, then the classifier [V, d] when unshared.
- v1: uint32 magic 0x616b3432 ("ak42"), int32 version 1, the seven int32, a uint8
  shared_classifier flag, zero padding to 256 bytes; then float32: rms_att [L, d], rms_ffn [L, d],
  rms_final [d] (the norms FIRST), token embeddings, wq, wk, wv, wo, w1, w2, w3, [classifier].
- v2: as v1 plus an int32 group size after the flag; the norms are float32 in the same place,
  the matrices follow as int8 (Q8_0) and then their float32 group scales.

Every offset is computed from the header and the file size must match exactly, so a truncated or
padded file is a :class:`FormatError`, never a misread. Tensors get Hugging Face Llama names
(``model.layers.N.input_layernorm.weight`` for rms_att, ``post_attention_layernorm`` for rms_ffn,
``model.norm.weight`` for rms_final) so the discovery tables classify them as a Llama. The q/k
rows keep llama2.c's interleaved rotary order (only the gains matter to the audit).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np

from ckpt_audit.errors import FormatError
from ckpt_audit.readers.base import CheckpointReader
from ckpt_audit.readers.dtypes import ITEMSIZE, decode
from ckpt_audit.readers.torch_zip import ZIP_MAGIC
from ckpt_audit.records import Convention, TensorInfo, frozen
from ckpt_audit.storage import ByteSource, Location

MAGIC = 0x616B3432
V1_HEADER = 256


@frozen
class Llama2cHeader:
    """The model parameters of a llama2.c file."""

    version: int
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    shared_classifier: bool
    group_size: int = 0

    @property
    def kv_dim(self) -> int:
        return self.dim * self.n_kv_heads // self.n_heads

    @property
    def head_size(self) -> int:
        return self.dim // self.n_heads


def _sane(p: tuple[int, ...]) -> str | None:
    """Why the seven parameters cannot be a model, or None when they can."""
    dim, hidden, layers, heads, kv, vocab, seq = p
    checks = [
        (0 < dim <= 1 << 16, f"dim {dim}"),
        (0 < hidden <= 1 << 20, f"hidden_dim {hidden}"),
        (0 < layers <= 1024, f"n_layers {layers}"),
        (0 < heads <= dim and dim % heads == 0, f"n_heads {heads} for dim {dim}"),
        (0 < kv <= heads and heads % kv == 0, f"n_kv_heads {kv} for n_heads {heads}"),
        (0 < abs(vocab) <= 1 << 22, f"vocab_size {vocab}"),
        (0 < seq <= 1 << 22, f"seq_len {seq}"),
    ]
    bad = [what for ok, what in checks if not ok]
    return ", ".join(bad) if bad else None


def parse_header(head: bytes, source: str) -> Llama2cHeader:
    """Parse the header from the first bytes of the file (at least 28, 256 for v1/v2)."""
    if len(head) >= 8 and struct.unpack_from("<I", head)[0] == MAGIC:
        (version,) = struct.unpack_from("<i", head, 4)
        if version not in (1, 2):
            raise FormatError(f"llama2.c file of unknown version {version}", source)
        if len(head) < V1_HEADER:
            raise FormatError(f"truncated: a v{version} header is {V1_HEADER} bytes", source)
        params = struct.unpack_from("<7i", head, 8)
        why = _sane(params)
        if why or params[5] < 0:
            raise FormatError(f"not a llama2.c v{version} header ({why or 'negative vocab'})",
                              source)
        shared = head[36]
        if shared not in (0, 1):
            raise FormatError(f"shared_classifier flag is {shared}, not 0 or 1", source)
        group = struct.unpack_from("<i", head, 37)[0] if version == 2 else 0
        if version == 2 and group <= 0:
            raise FormatError(f"bad Q8_0 group size {group}", source)
        dim, hidden, layers, heads, kv, vocab, seq = params
        return Llama2cHeader(version, dim, hidden, layers, heads, kv, vocab, seq, bool(shared),
                             group)
    if len(head) < 28:
        raise FormatError("truncated: shorter than the 28-byte llama2.c header", source)
    params = struct.unpack_from("<7i", head, 0)
    why = _sane(params)
    if why:
        raise FormatError(f"not a llama2.c model header ({why})", source)
    dim, hidden, layers, heads, kv, vocab, seq = params
    return Llama2cHeader(0, dim, hidden, layers, heads, kv, abs(vocab), seq, vocab > 0)


def layout(h: Llama2cHeader, source: str | None = None
           ) -> tuple[list[tuple[str, str, tuple[int, ...], int]], int]:
    """Every tensor as ``(name, dtype, shape, offset)`` and the exact file size they imply."""
    d, f, n_layers, v, kv = h.dim, h.hidden_dim, h.n_layers, h.vocab_size, h.kv_dim
    out: list[tuple[str, str, tuple[int, ...], int]] = []
    pos = 28 if h.version == 0 else V1_HEADER
    lay = "model.layers.{}."

    def add(name: str, shape: tuple[int, ...], dtype: str = "F32", per_layer: bool = False) -> None:
        nonlocal pos
        n = int(np.prod(shape)) * ITEMSIZE[dtype]
        if per_layer:
            for i in range(n_layers):
                out.append((lay.format(i) + name, dtype, shape, pos + i * n))
            pos += n * n_layers
        else:
            out.append((name, dtype, shape, pos))
            pos += n

    mats: list[tuple[str, tuple[int, ...]]] = [
        ("self_attn.q_proj.weight", (d, d)), ("self_attn.k_proj.weight", (kv, d)),
        ("self_attn.v_proj.weight", (kv, d)), ("self_attn.o_proj.weight", (d, d)),
    ]
    ffn: list[tuple[str, tuple[int, ...]]] = [
        ("mlp.gate_proj.weight", (f, d)), ("mlp.down_proj.weight", (d, f)),
        ("mlp.up_proj.weight", (f, d)),
    ]
    if h.version == 0:
        add("model.embed_tokens.weight", (v, d))
        add("input_layernorm.weight", (d,), per_layer=True)
        for name, shape in mats:
            add(name, shape, per_layer=True)
        add("post_attention_layernorm.weight", (d,), per_layer=True)
        for name, shape in ffn:
            add(name, shape, per_layer=True)
        add("model.norm.weight", (d,))
        add("rope.freq_cis_real", (h.seq_len, h.head_size // 2))
        add("rope.freq_cis_imag", (h.seq_len, h.head_size // 2))
        if not h.shared_classifier:
            add("lm_head.weight", (v, d))
        return out, pos
    add("input_layernorm.weight", (d,), per_layer=True)
    add("post_attention_layernorm.weight", (d,), per_layer=True)
    add("model.norm.weight", (d,))
    q = "F32" if h.version == 1 else "I8"
    weights: list[tuple[str, tuple[int, ...], bool]] = [
        ("model.embed_tokens.weight", (v, d), False)
    ]
    weights += [(name, shape, True) for name, shape in mats + ffn]
    if not h.shared_classifier:
        weights.append(("lm_head.weight", (v, d), False))
    for name, shape, per in weights:
        add(name, shape, q, per_layer=per)
    if h.version == 2:
        for name, shape, per in weights:
            numel = int(np.prod(shape))
            if numel % h.group_size:
                raise FormatError(f"{name}: {numel} values do not split into groups of "
                                  f"{h.group_size}", source)
            add(name.removesuffix(".weight") + ".scales", (numel // h.group_size,), per_layer=per)
    return out, pos


class Llama2cReader(CheckpointReader):
    """A llama2.c ``.bin`` model: header, computed offsets, exact size check."""

    format = "llama2c"
    config_source = "llama2c header"
    convention_hint: ClassVar[Convention | None] = Convention.DIRECT

    def __init__(self, loc: Location) -> None:
        super().__init__(loc)
        if loc.is_dir():
            raise FormatError("a llama2.c model is one file, not a folder", loc.display)
        self._src: ByteSource = loc.open()
        size = self._src.size()
        head = self._src.read(0, min(size, V1_HEADER))
        if head[:4] == ZIP_MAGIC:
            raise FormatError("this is a zip (a torch checkpoint), not a llama2.c model",
                              loc.display)
        self.header = parse_header(head, loc.display)
        entries, expected = layout(self.header, loc.display)
        if size != expected:
            what = "truncated" if size < expected else "has trailing bytes"
            raise FormatError(
                f"{what}: a llama2.c v{self.header.version} model with these parameters is "
                f"{expected} bytes, the file is {size}", loc.display)
        self._entries = {name: (dtype, shape, off) for name, dtype, shape, off in entries}
        self._infos = {name: TensorInfo(name, shape, dtype, loc.display)
                       for name, dtype, shape, _ in entries}

    @classmethod
    def detect(cls, loc: Location) -> bool:
        """Magic (v1/v2) or a sane v0 header; a v0 header must also match the file size unless
        the file is named ``*.bin`` (then a size mismatch is reported as truncation)."""
        if loc.is_dir():
            return False
        try:
            src = loc.open()
            try:
                size = src.size()
                head = src.read(0, min(size, V1_HEADER))
            finally:
                src.close()
        except FormatError:
            return False
        if head[:4] == ZIP_MAGIC or len(head) < 28:
            return False
        if struct.unpack_from("<I", head)[0] == MAGIC:
            return True
        try:
            h = parse_header(head, loc.display)
            expected = layout(h, loc.display)[1]
        except FormatError:
            return False
        return size == expected or loc.name.endswith(".bin")

    def tensors(self) -> Mapping[str, TensorInfo]:
        return self._infos

    def read(self, name: str) -> np.ndarray:
        return self.read_many([name])[name]

    def read_many(self, names: Iterable[str]) -> dict[str, np.ndarray]:
        names = list(names)
        for n in names:
            if n not in self._entries:
                raise FormatError(f"no tensor named {n!r}", self.display)
        ranges = []
        for n in names:
            dtype, shape, off = self._entries[n]
            ranges.append((off, int(np.prod(shape)) * ITEMSIZE[dtype]))
        blobs = self._src.read_ranges(ranges)
        return {n: decode(raw, self._entries[n][0], self._entries[n][1], self.display)
                for n, raw in zip(names, blobs, strict=True)}

    def config(self) -> dict[str, Any]:
        h = self.header
        return {
            "model_type": "llama", "llama2c_version": h.version, "hidden_size": h.dim,
            "intermediate_size": h.hidden_dim, "num_hidden_layers": h.n_layers,
            "num_attention_heads": h.n_heads, "num_key_value_heads": h.n_kv_heads,
            "vocab_size": h.vocab_size, "max_position_embeddings": h.seq_len,
            "tie_word_embeddings": h.shared_classifier,
        }

    def close(self) -> None:
        self._src.close()
