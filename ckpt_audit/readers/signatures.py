"""The names that mark each folder layout, and which formats a local folder's listing leaves open.

Design note: the registry asks every format about a path, so that two formats claiming the same
files are an ambiguity and not a guess. Asking a reader means importing it, and the DCP, torch,
DeepSpeed, Megatron and GGUF readers bring zipfile, argparse and the pickle allowlist: ~18 ms of
start-up that a folder of safetensors shards never needs. So, for a local folder, the registry
first matches the folder's listing (one ``listdir``) against each format's *signature* here, and
imports and asks only the readers whose signature holds. A signature is what every folder the
reader's ``detect`` accepts shows at its top level: it can rule a format out, never in; the
reader's ``detect`` stays the full test. ``tests/readers/test_signatures.py`` holds every reader's
``detect`` to its signature over generated folders. The listing is compared in lower case (a
reader probing a case-insensitive disk may find ``LATEST`` as ``latest``), and files, and
folders not on local disk (a remote store's listing is not what its readers probe: HTTP's is a
probe of well-known names), are never ruled out here.

The names themselves are defined here, once, and imported by the readers (their file patterns
are built from them) and by run discovery, which looks for the same trackers.
"""

from __future__ import annotations

from collections.abc import Collection

from ckpt_audit.readers.hf_index import SAFETENSORS_INDEX, TORCH_INDEX

#: Megatron-LM's run-folder tracker: the iteration to read (a number, or ``release``).
TRACKER = "latest_checkpointed_iteration.txt"
#: A PyTorch Distributed Checkpoint's metadata file (Megatron ``torch_dist`` included).
DCP_METADATA = ".metadata"
#: NeMo 2: ``<ckpt>/weights/`` holds the ``torch_dist`` checkpoint beside ``<ckpt>/context/``.
NEMO_WEIGHTS = "weights"
#: Every Megatron legacy rank folder starts so (``mp_rank_TT[_PPP][_EEE]``).
RANK_DIR_PREFIX = "mp_rank_"
#: DeepSpeed's run-folder tracker: the tag folder to read.
DEEPSPEED_LATEST = "latest"
#: Every DeepSpeed model-states file ends so (``mp_rank_00_model_states.pt``, ZeRO-3's
#: ``zero_pp_rank_0_mp_rank_00_model_states.pt``, pipeline ``layer_01-model_states.pt``).
DEEPSPEED_STATES_SUFFIX = "model_states.pt"
#: A Meta (llama) checkpoint's hyper-parameters, beside ``consolidated.NN.pth``.
META_PARAMS = "params.json"
#: The single-file torch checkpoints a folder may hold, in the order they are tried.
TORCH_SINGLE_NAMES = ("pytorch_model.bin", "model.pt", "model.pth", "consolidated.pth")
SAFETENSORS_SUFFIX = ".safetensors"


def safetensors_folder(names: Collection[str]) -> bool:
    """A ``*.safetensors`` file or a safetensors shard index."""
    return SAFETENSORS_INDEX in names or any(n.endswith(SAFETENSORS_SUFFIX) for n in names)


def torch_folder(names: Collection[str]) -> bool:
    """A torch shard index or one of :data:`TORCH_SINGLE_NAMES`."""
    return TORCH_INDEX in names or any(n in names for n in TORCH_SINGLE_NAMES)


def meta_folder(names: Collection[str]) -> bool:
    """``params.json`` (beside the rank files the reader then asks for)."""
    return META_PARAMS in names


def dcp_folder_marks(names: Collection[str]) -> bool:
    """``.metadata`` here, in NeMo's ``weights/``, or in the iteration a Megatron tracker names."""
    return DCP_METADATA in names or NEMO_WEIGHTS in names or TRACKER in names


def megatron_legacy_folder(names: Collection[str]) -> bool:
    """A Megatron tracker, or rank folders (an iteration folder)."""
    return TRACKER in names or any(n.startswith(RANK_DIR_PREFIX) for n in names)


def deepspeed_folder(names: Collection[str]) -> bool:
    """DeepSpeed's ``latest`` tracker, or model-states files (a tag folder)."""
    return DEEPSPEED_LATEST in names or any(n.endswith(DEEPSPEED_STATES_SUFFIX) for n in names)


def file_only(names: Collection[str]) -> bool:
    """A format that is one file (GGUF, llama2.c): never a folder."""
    return False
