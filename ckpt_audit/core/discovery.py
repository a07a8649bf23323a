"""Find every normalization gain in a tensor listing and give it a role and a layer index.

Works on names, shapes and dtypes only (no values), with the tables of
:mod:`ckpt_audit.core.layouts`.
It also checks MTP completeness: a config that declares MTP depths whose tensors are missing.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from ckpt_audit.core.layouts import (
    BIAS_PARAMS,
    FINAL_PATTERNS,
    FUSED_BIAS,
    FUSED_GAIN,
    GAIN_PARAMS,
    GGML_QUANT_DTYPE,
    LAYER_INDEX,
    MTP_INFIXES,
    MTP_LAYOUTS,
    NORM_MODULE,
    QUANT_INT_DTYPES,
    QUANT_SCHEMES,
    ROLE_PATTERNS,
    MtpLayout,
    is_mtp_name,
    model_type,
    mtp_count_from_config,
    num_layers_from_config,
)
from ckpt_audit.core.layouts import (
    MTP_PREFIXES as MTP_NAME_PREFIXES,
)
from ckpt_audit.core.reference import match_key
from ckpt_audit.records import Finding, Role, Severity, SkippedTensor, TensorInfo, frozen
from ckpt_audit.storage.base import count_byte, has_byte_in


@frozen
class Quantized:
    """How a quantized gain is stored: ``values`` × ``scale`` (broadcast) under ``scheme``."""

    scheme: str
    values: str
    scale: str
    dtype: str  # shown in reports, e.g. "I8×F32 (int8-scale)"


@frozen
class Candidate:
    """A gain to audit: its name, role and layer index (None where the name has none), and for a
    quantized gain how to dequantize it."""

    name: str
    role: Role
    layer: int | None
    quant: Quantized | None = None

    @property
    def reads(self) -> tuple[str, ...]:
        """The tensors whose values make this gain."""
        return (self.quant.values, self.quant.scale) if self.quant else (self.name,)


@frozen
class Discovery:
    """What :func:`discover` found: gains, LayerNorm biases, rejects and MTP facts."""

    gains: tuple[Candidate, ...]
    biases: tuple[str, ...]
    findings: tuple[Finding, ...]
    mtp_layout: str | None
    mtp_declared: int
    mtp_layers: tuple[int, ...]
    skipped: tuple[SkippedTensor, ...] = ()


def classify_name(name: str) -> str | None:
    """``"gain"``, ``"bias"`` or ``None`` from the name alone."""
    low = name.lower()
    if "norm" not in low and "ln" not in low and "rms_" not in low:
        return None  # fast path: most of a big checkpoint's 10^5 names
    parts = name.split(".")
    param = parts[-1]
    if FUSED_GAIN.search(param):
        return "gain"
    if FUSED_BIAS.search(param):
        return "bias"
    module = _module_part(parts)
    if module is None or not NORM_MODULE.search(module):
        return None
    if param in GAIN_PARAMS:
        return "gain"
    if param in BIAS_PARAMS:
        return "bias"
    return None


def _module_part(parts: list[str]) -> str | None:
    """The module name before the parameter, skipping list indices: ``decoder_norms.0.weight``
    and ``norms.1.weight`` are gains of a ModuleList of norms."""
    for part in reversed(parts[:-1]):
        if not part.isdigit():
            return part
    return None


def layer_of(name: str) -> int | None:
    """The layer index in ``name`` (``model.layers.7.`` → 7), or None."""
    m = LAYER_INDEX.search(name)
    return int(m.group(1)) if m else None


_MTP_LAYER = re.compile(r"^(?:model\.layers|layers|blk)\.(\d+)\.(?:enorm|hnorm|eh_proj)\.")


def _mtp_layer_ids(names: list[str], cfg: dict[str, Any], joined: str | None = None,
                   normish: list[str] | None = None) -> set[int]:
    """Layer indices under ``model.layers.`` / ``blk.`` that are MTP depths (DeepSeek HF).
    ``normish`` (:func:`_normish` of the same names) spares two scans of ``joined``: every
    ``enorm``/``hnorm`` name is among them."""
    ids: set[int] = set()
    n_layers = num_layers_from_config(cfg)
    declared, _ = mtp_count_from_config(cfg)
    if n_layers is not None and declared:
        ids.update(range(n_layers, n_layers + declared))
    joined = _joined(names) if joined is None else joined
    if normish is None:
        lines = _lines_with(joined, (".enorm.", ".hnorm.", ".eh_proj."))
    else:
        lines = [n for n in normish if (".enorm." in n or ".hnorm." in n) and "\n" not in n]
        lines += _lines_with(joined, (".eh_proj.",))
    for line in lines:
        m = _MTP_LAYER.match(line)
        if m:
            ids.add(int(m.group(1)))
    return ids


def _role(name: str, layer: int | None, mtp_ids: set[int]) -> Role:
    if is_mtp_name(name) or (layer is not None and layer in mtp_ids):
        return Role.MTP
    for role, pattern in ROLE_PATTERNS:
        if pattern.search(name):
            return Role(role)
    return Role.LAYER if layer is not None else Role.OTHER


def _find_final(names: list[str]) -> str | None:
    """The first name a final pattern matches, as is or once wrapper prefixes are removed;
    several matches of one pattern (a list of output norms) give the highest index."""
    for pattern in FINAL_PATTERNS:
        hits = [n for n in names if pattern.fullmatch(n) or pattern.fullmatch(match_key(n))]
        if hits:
            return max(hits, key=_index_key)
    return None


def _index_key(name: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in name.split("."))


def discover(tensors: Mapping[str, TensorInfo], cfg: dict[str, Any]) -> Discovery:
    """Every gain (1-D floating tensor named like a norm) with its role, plus MTP checks."""
    names = list(tensors)  # in any order: what comes out is sorted (no sort of 10^5 names)
    joined, odd, capital = _join(names)
    normish = _normish(names, joined, odd, capital)
    mtp_ids = _mtp_layer_ids(names, cfg, joined, normish)
    findings: list[Finding] = []
    gains: list[str] = []
    quant: dict[str, Quantized] = {}
    biases: list[str] = []
    skipped: list[SkippedTensor] = []
    used: set[str] = set()

    def skip(name: str, reason: str) -> None:
        info = tensors[name]
        skipped.append(SkippedTensor(name, info.dtype, tuple(info.shape), reason))

    for name in normish:
        kind = classify_name(name)
        if kind == "bias":
            biases.append(name)
            continue
        base = None if kind else _quant_base(name)
        if kind != "gain" and base is None:
            continue
        gain = base or name
        if gain in quant or gain in gains:
            continue
        q = _quantized(gain, tensors)
        if q is not None:
            quant[gain] = q
            used.update((q.values, q.scale))
            gains.append(gain)
            continue
        if base is not None:
            continue  # a scale or values without its partner: listed below as skipped
        info = tensors[name]
        if len(info.shape) == 1 and GGML_QUANT_DTYPE.match(info.dtype):
            gains.append(name)  # block-quantized in a GGUF file: the reader dequantizes it
            continue
        if len(info.shape) == 1 and info.dtype in QUANT_INT_DTYPES:
            findings.append(Finding(
                Severity.WARN, "quantized-gain", name,
                f"a norm gain stored as {info.dtype} with no scale of a known scheme "
                f"(looked for {_looked_for(name)}): not audited",
            ))
            skip(name, f"quantized ({info.dtype}) with no known scale")
            continue
        if len(info.shape) != 1 or not info.is_float:
            findings.append(Finding(
                Severity.WARN, "not-a-gain", name,
                f"named like a norm gain but is {info.dtype} of shape {list(info.shape)} "
                "(a gain is a 1-D floating tensor): not audited",
            ))
            skip(name, f"{info.dtype} of shape {list(info.shape)} is not a 1-D floating gain")
            continue
        gains.append(name)
    taken = set(gains) | set(biases) | used | {t.name for t in skipped}
    for name in normish:
        if name in taken or len(tensors[name].shape) != 1:
            continue
        parts = name.split(".")
        module = _module_part(parts)
        if _quant_base(name) is not None:
            skip(name, "part of a quantized gain whose values or scale are missing")
        elif module is not None and NORM_MODULE.search(module):
            skip(name, f"parameter {parts[-1]!r} of a norm is neither a gain nor a bias")
    final = _find_final([g for g in gains if not is_mtp_name(g)
                         and layer_of(g) not in mtp_ids])
    cands = []
    for name in gains:
        layer = layer_of(name)
        role = Role.FINAL if name == final else _role(name, layer, mtp_ids)
        cands.append(Candidate(name, role, layer, quant.get(name)))
    layout, declared, mtp_findings = check_mtp(tensors, cfg, mtp_ids, names, joined, normish,
                                               odd)
    findings.extend(mtp_findings)
    return Discovery(tuple(cands), tuple(biases), tuple(findings), layout, declared,
                     tuple(sorted(mtp_ids)), tuple(skipped))


def _quant_base(name: str) -> str | None:
    """The gain a quantized part belongs to (``X.weight.qweight`` → ``X.weight``), or None."""
    for _scheme, values, scales in QUANT_SCHEMES:
        for suffix in (values, *scales):
            if suffix and name.endswith(suffix):
                base = name[: -len(suffix)]
                if classify_name(base) == "gain":
                    return base
    return None


def _looked_for(gain: str) -> str:
    return ", ".join(f"{gain}{v} + {gain}{s}" for _, v, scales in QUANT_SCHEMES for s in scales)


def _quantized(gain: str, tensors: Mapping[str, TensorInfo]) -> Quantized | None:
    """The known scheme a gain is stored under, when its values and scale are both present."""
    for scheme, values_suffix, scales in QUANT_SCHEMES:
        values = gain + values_suffix
        if values not in tensors:
            continue
        v = tensors[values]
        is_int = v.dtype in QUANT_INT_DTYPES
        if len(v.shape) != 1 or not (is_int if values_suffix else v.dtype.startswith("F8")):
            continue
        for suffix in scales:
            scale = gain + suffix
            if scale in tensors:
                sc = tensors[scale]
                if sc.is_float and sc.numel in (1, v.shape[0]):
                    return Quantized(scheme, values, scale, f"{v.dtype}×{sc.dtype} ({scheme})")
    return None


def _layout_prefixes(layout: MtpLayout, depths: int, n_layers: int | None) -> list[str]:
    out = []
    for k in range(depths):
        layer = (n_layers + k) if n_layers is not None else k
        out.append(layout.prefix.format(k=k, layer=layer))
    return out


_NORMISH = ("norm", "ln", "rms_")


def _normish(names: list[str], joined: str, odd: list[str] | None = None,
             capital: bool | None = None) -> list[str]:
    """The names (sorted) that contain one of :data:`_NORMISH` in any case: the cheap filter
    before a name is classified (10^5 names, a few hundred norms). Literal finds over the joined
    names (lowered only where a capital letter is in them: most checkpoints have none); per name
    only where the names are not all ASCII (``lower`` could change a line's length there).
    ``odd`` and ``capital`` are :func:`_join`'s, when the caller has them."""
    if not joined.isascii():
        return sorted(n for n in names if any(k in n.lower() for k in _NORMISH))
    if capital is None:
        capital = has_byte_in(joined.encode("ascii"), 0x41, 0x5A)
    found = _lines_with(joined, _NORMISH, joined.lower() if capital else None)
    odd = _multiline(names, joined) if odd is None else odd
    extra = [n for n in odd if any(k in n.lower() for k in _NORMISH)]
    return sorted(found + extra)


def _lines_with(joined: str, needles: tuple[str, ...], haystack: str | None = None) -> list[str]:
    """The lines of ``joined`` (in order, each once) where any of ``needles`` occurs literally:
    ``str.find`` at C speed, Python only per hit. ``haystack`` (same length as ``joined``, e.g.
    lowered) is searched instead when given; the lines returned are always ``joined``'s."""
    hay = joined if haystack is None else haystack
    spans: dict[int, int] = {}
    for needle in needles:
        i = hay.find(needle)
        while i >= 0:
            start = hay.rfind("\n", 0, i) + 1
            end = hay.find("\n", i + len(needle) - 1)  # the needle's own line ends there
            end = len(hay) if end < 0 else end
            spans[start] = end
            i = hay.find(needle, end)
    return [joined[s:spans[s]] for s in sorted(spans)]


def _joined(names: list[str]) -> str:
    """All names, one per line (and a last newline): lets one C-speed ``find`` scan 10^5 names
    (see :func:`_lines_with`). A name holding a newline (never a module path, but a safetensors
    key may be any string) is left out, so that every line is a whole name."""
    return _join(names).joined


class _Joined(NamedTuple):
    joined: str  # :func:`_joined`
    odd: list[str]  # the names it leaves out (:func:`_multiline`)
    capital: bool  # whether a name holds an ASCII capital letter


def _join(names: list[str]) -> _Joined:
    """:func:`_joined` and what :func:`_normish` needs to know of it, from one encoding of the
    joined names (vectorised scans: ``str.count`` and ``str.lower`` go a character at a time
    over 5 MB of names). In UTF-8, bytes 10 and 0x41-0x5A are only ever a newline and capitals."""
    joined = "\n".join([*names, ""])
    data = joined.encode("utf-8", "surrogatepass")
    capital = has_byte_in(data, 0x41, 0x5A)
    if count_byte(data, 10) == len(names):
        return _Joined(joined, [], capital)
    return _Joined("".join(n + "\n" for n in names if "\n" not in n),
                   [n for n in names if "\n" in n], capital)


def _multiline(names: list[str], joined: str) -> list[str]:
    """The names :func:`_joined` left out of ``joined``."""
    return [] if _line_count(joined) == len(names) else [n for n in names if "\n" in n]


def _line_count(joined: str) -> int:
    """How many newlines ``joined`` holds (vectorised: ``str.count`` of one character is a
    character-at-a-time loop over 5 MB of names). In UTF-8 byte 10 is only ever a newline."""
    return count_byte(joined.encode("utf-8", "surrogatepass"), 10)


#: How many prefixes :func:`_has_prefix` looks for with literal finds (each scans the joined
#: names, ~2 ms for 92k of them); more are looked up in the sorted names (a sort, ~15 ms).
_FIND_PREFIXES = 8
#: A substring of every prefix in ``MTP_NAME_PREFIXES`` (``tests/core/test_discovery.py`` holds
#: the table to it): one find rules them all out on a checkpoint without MTP modules.
MTP_PREFIX_CORE = "mtp"


def _has_prefix(names: list[str], joined: str, odd: list[str], prefixes: list[str]) -> bool:
    """Whether any name starts with any prefix: a literal find of each at a line start of the
    joined names (the names ``joined`` leaves out, ``odd``, one by one) for a few prefixes, a
    binary search per prefix in the sorted names for many."""
    if len(prefixes) > _FIND_PREFIXES:
        ordered = sorted(names)
        for p in prefixes:
            i = bisect.bisect_left(ordered, p)
            if i < len(ordered) and ordered[i].startswith(p):
                return True
        return False
    return any(joined.startswith(p) or ("\n" + p) in joined for p in prefixes) \
        or any(n.startswith(p) for n in odd for p in prefixes)


def detect_mtp_layout(names: list[str], cfg: dict[str, Any], joined: str | None = None,
                      normish: list[str] | None = None) -> MtpLayout | None:
    """The MTP layout whose marker tensors appear in ``names`` (or that the model type implies).
    ``normish`` (:func:`_normish` of the same names) spares a scan per layout: every layout's
    marker is a norm (``tests/core/test_discovery.py`` holds the table to that)."""
    joined = _joined(names) if joined is None else joined
    for layout in MTP_LAYOUTS:
        marker = layout.required[0]
        head = layout.prefix.split("{")[0]
        if normish is None:
            lines = _lines_with(joined, ("." + marker + "\n",))
        else:
            lines = [n for n in normish if n.endswith("." + marker) and "\n" not in n]
        if any(line.startswith(head) for line in lines):
            return layout
    mt = model_type(cfg)
    for layout in MTP_LAYOUTS:
        if mt in layout.model_types:
            return layout
    return None


def check_mtp(
    tensors: Mapping[str, TensorInfo], cfg: dict[str, Any], mtp_ids: set[int],
    names: list[str] | None = None, joined: str | None = None, normish: list[str] | None = None,
    odd: list[str] | None = None,
) -> tuple[str | None, int, list[Finding]]:
    """``(layout name, depths declared, findings)``: missing or incomplete MTP modules fail.
    ``names`` in any order; ``joined``, ``normish`` and ``odd`` are :func:`_join`'s and
    :func:`_normish`'s of them, when the caller has them."""
    names = names if names is not None else list(tensors)
    joined = _joined(names) if joined is None else joined
    odd = _multiline(names, joined) if odd is None else odd
    declared, key = mtp_count_from_config(cfg)
    layout = detect_mtp_layout(names, cfg, joined, normish)
    heads = [f"{head}{i}." for i in mtp_ids for head in ("model.layers.", "layers.", "blk.")]
    if MTP_PREFIX_CORE in joined or any(MTP_PREFIX_CORE in n for n in odd):
        heads = list(MTP_NAME_PREFIXES) + heads
    present = _has_prefix(names, joined, odd, heads) or any(s in joined for s in MTP_INFIXES)
    findings: list[Finding] = []
    if declared == 0:
        if present:
            findings.append(Finding(Severity.INFO, "mtp-undeclared", None,
                                    "MTP tensors are present but the config declares no MTP "
                                    "layers"))
        return (layout.name if layout and present else None), 0, findings
    if layout is None or not present:
        looked = "; ".join(
            ", ".join(p + r for r in lay.required[:1])
            for lay in MTP_LAYOUTS
            for p in _layout_prefixes(lay, 1, num_layers_from_config(cfg))
        )
        findings.append(Finding(
            Severity.FAIL, "mtp-missing", None,
            f"config declares {key}={declared} but the checkpoint has no MTP tensors "
            f"(looked for {looked}): serving would accept 0% of drafts",
        ))
        return (layout.name if layout else None), declared, findings
    n_layers = num_layers_from_config(cfg)
    for k, prefix in enumerate(_layout_prefixes(layout, declared, n_layers)):
        missing = [prefix + r for r in layout.required if prefix + r not in tensors]
        if missing:
            findings.append(Finding(
                Severity.FAIL, "mtp-incomplete", prefix.rstrip("."),
                f"MTP depth {k + 1} ({layout.name} layout) lacks " + ", ".join(missing),
            ))
    return layout.name, declared, findings
