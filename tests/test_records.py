"""``records.frozen`` behaves as ``@dataclass(frozen=True)``: the reference here is the standard
library's own dataclass with the same fields, instance for instance."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from dataclasses import FrozenInstanceError, field

import pytest

from ckpt_audit.records import Finding, GainStats, Severity, TensorInfo, frozen


@frozen
class Ours:
    """A record with every kind of field the package uses."""

    name: str
    dims: tuple[int, ...]
    ratio: float = 1.0
    extra: dict = field(default_factory=dict, compare=False)
    tags: list = field(default_factory=list, hash=False)
    note: str | None = field(default=None, compare=False, hash=False, repr=False)


#: The same fields, built by the standard library's own frozen dataclass.
Reference = dataclasses.make_dataclass(
    "Reference",
    [(f.name, f.type, field(default=f.default, default_factory=f.default_factory,
                            repr=f.repr, compare=f.compare, hash=f.hash))
     for f in dataclasses.fields(Ours)],
    frozen=True)


CASES = [(("a", (1, 2)), {}), (("a", (1, 2), 0.5), {"extra": {"k": 1}}),
         (("b",), {"dims": (), "ratio": float("nan"), "note": "x"}), (("c", (3,)), {"tags": [1]}),
         (("a", (1, 2)), {"note": "only the uncompared fields differ", "extra": {"x": 2}})]


def _same_repr(ours: object, ref: object) -> bool:
    return repr(ours).replace("Ours(", "X(") == repr(ref).replace("Reference(", "X(")


@pytest.mark.parametrize(("args", "kwargs"), CASES)
def test_init_repr_eq_and_fields_are_the_dataclass_ones(args: tuple, kwargs: dict) -> None:
    ours, ref = Ours(*args, **kwargs), Reference(*args, **kwargs)
    assert _same_repr(ours, ref)
    assert dataclasses.asdict(ours) == dataclasses.asdict(ref)
    assert [f.name for f in dataclasses.fields(ours)] == [f.name for f in dataclasses.fields(ref)]
    assert dataclasses.is_dataclass(ours) and Ours.__match_args__ == Reference.__match_args__
    for other_args, other_kwargs in CASES:  # equality and hashing agree pair by pair
        o2, r2 = Ours(*other_args, **other_kwargs), Reference(*other_args, **other_kwargs)
        assert (ours == o2) == (ref == r2) and (ours != o2) == (ref != r2)
        if ours.tags == [] and o2.tags == []:  # a list field is not hashed, but is compared
            assert (hash(ours) == hash(o2)) == (hash(ref) == hash(r2))


def test_defaults_factories_errors_and_frozenness() -> None:
    a, b = Ours("a", ()), Ours("a", ())
    assert a.extra == {} and a.extra is not b.extra and a.tags is not b.tags  # fresh each time
    assert a.__eq__(Reference("a", ())) is NotImplemented and a != Reference("a", ())
    with pytest.raises(FrozenInstanceError):
        a.name = "b"  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        del a.name  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        a.other = 1  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        Ours("a")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Ours("a", (), 1.0, {}, [], None, "extra")  # type: ignore[call-arg]
    assert dataclasses.replace(a, ratio=2.0) == Ours("a", (), 2.0)
    assert pickle.loads(pickle.dumps(a)) == a and copy.deepcopy(a) == a == copy.copy(a)


def test_unsupported_fields_are_refused_loudly() -> None:
    with pytest.raises(TypeError, match="plain fields"):
        @frozen
        class Late:
            """Not built by __init__."""

            x: int = field(init=False, default=0)
    with pytest.raises(TypeError, match="plain fields"):
        @frozen
        class Post:
            """Checked after __init__."""

            x: int

            def __post_init__(self) -> None:
                pass


def test_a_record_without_a_docstring_is_refused() -> None:
    with pytest.raises(TypeError, match="docstring"):
        @frozen
        class Bare:
            x: int


def test_the_package_records_are_built_by_it() -> None:
    info = TensorInfo("model.norm.weight", (8,), "BF16", "x.safetensors")
    assert info == TensorInfo("model.norm.weight", (8,), "BF16", "x.safetensors")
    assert {info: 1}[TensorInfo("model.norm.weight", (8,), "BF16", "x.safetensors")] == 1
    assert repr(Finding(Severity.WARN, "code", None, "m")).startswith("Finding(severity=")
    assert GainStats.__init__.__qualname__ == "GainStats.__init__"
