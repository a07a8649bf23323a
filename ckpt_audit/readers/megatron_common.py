"""What both Megatron layouts share: the run folder, the allowlist, and ``args`` -> config.

A Megatron-LM run folder holds ``latest_checkpointed_iteration.txt`` (an iteration number, or
``release``) next to ``iter_XXXXXXX/`` (or ``release/``) folders. Inside, the legacy layout has
``mp_rank_TT[_PPP][_EEE]/model_optim_rng.pt``; ``torch_dist`` has ``metadata.json``,
``.metadata``, ``__R_N.distcp`` and ``common.pt``. Pointing at either the run folder or one
iteration folder works; the tracker is never guessed around: if it names a missing iteration
that is an error, not a silent fall-back to another one.

The pickles Megatron writes name a few globals beyond plain tensors: ``argparse.Namespace``
(``args``), Megatron enums inside it, numpy RNG-state arrays, Transformer Engine's
``io.BytesIO`` extra state. They are added to :mod:`ckpt_audit.readers.safe_pickle` as *inert*
placeholders (nothing is imported or called); the list follows megatron-core's own
``megatron/core/safe_globals.py``.
"""

from __future__ import annotations

import argparse
from typing import Any

from ckpt_audit.errors import FormatError
from ckpt_audit.readers import safe_pickle
from ckpt_audit.readers.signatures import DCP_METADATA, TRACKER
from ckpt_audit.storage import Location

#: Globals Megatron checkpoints contain, made inert (megatron-core's safe_globals.py + numpy).
MEGATRON_INERT_GLOBALS: tuple[tuple[str, str], ...] = (
    ("types", "SimpleNamespace"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.dtypes", "UInt32DType"),
    ("megatron.core.enums", "ModelType"),
    ("megatron.core.transformer.enums", "AttnBackend"),
    ("megatron.core.transformer.enums", "CudaGraphScope"),
    ("megatron.core.transformer.enums", "AttnMaskType"),
    ("megatron.core.optimizer", "OptimizerConfig"),
    ("megatron.core.optimizer.optimizer_config", "OptimizerConfig"),
    ("megatron.core.rerun_state_machine", "RerunDiagnostic"),
    ("megatron.core.rerun_state_machine", "RerunMode"),
    ("megatron.core.rerun_state_machine", "RerunState"),
    ("_io", "BytesIO"),
    ("io", "BytesIO"),
    ("__builtin__", "bytes"),
    ("builtins", "bytes"),
    ("signal", "Signals"),
)


def register_globals() -> None:
    """Extend the shared allowlist with Megatron's inert globals (idempotent)."""
    for module, name in MEGATRON_INERT_GLOBALS:
        safe_pickle.allow_inert(module, name)


register_globals()


#: Files whose presence shows a Megatron iteration folder where the storage cannot list (HTTP).
ITERATION_PROBES = (DCP_METADATA, "metadata.json", "mp_rank_00/model_optim_rng.pt",
                    "mp_rank_00_000/model_optim_rng.pt")


def present(folder: Location, names: tuple[str, ...] | list[str]) -> list[str]:
    """The ``names`` that exist under ``folder``: one probe each, for storage that cannot list
    (plain HTTP); on local disk and object stores a listing is used first by the callers."""
    return [n for n in names if folder.child(n).exists()]


def folder_exists(loc: Location, probes: tuple[str, ...]) -> bool:
    """``loc`` exists as a folder, or (HTTP, where folders cannot be asked) holds a probe."""
    return loc.exists() and loc.is_dir() or bool(present(loc, probes))


def resolve_iteration(loc: Location) -> Location:
    """The iteration folder a user means: the tracker's target in a run folder, else ``loc``.

    A tracker naming a missing folder, or holding something that is not an iteration, is a
    :class:`FormatError` naming the tracker file.
    """
    if not loc.is_dir():
        return loc
    tracker = loc.child(TRACKER)
    if not tracker.exists():
        return loc
    text = tracker.read_bytes(limit=4096).decode("utf-8", "replace").strip()
    if text == "release":
        name = "release"
    else:
        try:
            name = f"iter_{int(text):07d}"
        except ValueError:
            raise FormatError(
                f"tracker holds {text[:40]!r}, not an iteration number or 'release'",
                tracker.display,
            ) from None
    target = loc.child(name)
    if not folder_exists(target, ITERATION_PROBES):
        raise FormatError(
            f"tracker points to iteration folder {name!r}, which does not exist",
            tracker.display,
        )
    return target


def args_config(args: Any) -> dict[str, Any]:
    """The model settings an audit needs from Megatron's ``args`` Namespace (plain values only).

    Keys follow Megatron's own names; ``hidden_size`` and ``mtp_num_layers`` are what
    :func:`ckpt_audit.core.layouts.d_model_from_config` and the MTP layout table read.
    """
    if isinstance(args, argparse.Namespace):
        items = vars(args)
    elif isinstance(args, dict):
        items = args
    else:
        return {}
    keep = (
        "hidden_size", "num_layers", "ffn_hidden_size", "num_attention_heads",
        "num_query_groups", "kv_channels", "normalization", "apply_layernorm_1p",
        "layernorm_zero_centered_gamma", "qk_layernorm", "mtp_num_layers",
        "mtp_loss_scaling_factor", "tensor_model_parallel_size", "pipeline_model_parallel_size",
        "virtual_pipeline_model_parallel_size", "num_layers_per_virtual_pipeline_stage",
        "expert_model_parallel_size", "num_experts", "padded_vocab_size", "ckpt_format",
        "transformer_impl", "iteration", "untie_embeddings_and_output_weights",
    )
    out: dict[str, Any] = {}
    for key in keep:
        val = items.get(key)
        if isinstance(val, bool | int | float | str):
            out[key] = val
    if out.get("layernorm_zero_centered_gamma") and not out.get("apply_layernorm_1p"):
        out["apply_layernorm_1p"] = True
    return out


def uses_offset_gains(cfg: dict[str, Any]) -> bool:
    """``--apply-layernorm-1p``: gains stored as w with γ_eff = 1 + w (offset convention)."""
    return bool(cfg.get("apply_layernorm_1p"))
