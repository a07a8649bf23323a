"""The one interface every checkpoint format implements.

A reader lists tensors (name, shape, dtype) from headers/metadata alone and reads the values of
the few tensors asked for, never whole shards. Values come back as numpy arrays in the stored
shape, widened to float32 (or float64 for F64), so the analysis core never needs torch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np

from ckpt_audit.records import Convention, Finding, TensorInfo
from ckpt_audit.storage import Location


class CheckpointReader(ABC):
    """A lazily opened checkpoint.

    Subclasses set ``format`` (the name shown in reports and accepted by ``--format-hint``) and
    implement :meth:`detect`, :meth:`tensors` and :meth:`read`. Everything else has a default.
    """

    format: ClassVar[str]
    #: Convention the format itself fixes (GGUF bakes the +1 in: always direct), else None.
    convention_hint: ClassVar[Convention | None] = None

    def __init__(self, loc: Location) -> None:
        self.loc = loc
        #: Findings the reader itself makes (e.g. tensor-parallel replicas that disagree).
        self.findings: list[Finding] = []

    @classmethod
    @abstractmethod
    def detect(cls, loc: Location) -> bool:
        """Cheaply decide whether ``loc`` is this format (file names, magic bytes)."""

    @abstractmethod
    def tensors(self) -> Mapping[str, TensorInfo]:
        """Every tensor of the model, by its (canonical, prefix-stripped) name."""

    @abstractmethod
    def read(self, name: str) -> np.ndarray:
        """The values of one tensor as a float32/float64 numpy array of its stored shape."""

    def read_many(self, names: Iterable[str]) -> dict[str, np.ndarray]:
        """Several tensors; formats that can batch or merge byte ranges override this."""
        return {n: self.read(n) for n in names}

    def config(self) -> dict[str, Any]:
        """The model configuration (config.json, Megatron ``args``, GGUF metadata...) or ``{}``."""
        return {}

    @property
    def display(self) -> str:
        return self.loc.display

    @property
    def bytes_read(self) -> int:
        """Bytes this reader fetched from storage (headers + gains)."""
        return self.loc.bytes_read

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release file handles."""

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
