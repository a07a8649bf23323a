"""The policy ladder, its file format, and the article's model table derived from it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ckpt_audit.commands.bands import bands_table
from ckpt_audit.core.policy import Bands, default_policy_text, load_policy
from ckpt_audit.errors import PolicyError
from ckpt_audit.records import Role, Severity, Status

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("ratio,status", [
    (0.0, Status.COLLAPSE), (0.3999, Status.COLLAPSE), (0.4, Status.LOW), (0.4999, Status.LOW),
    (0.5, Status.SHRINK), (0.8999, Status.SHRINK), (0.9, Status.NOMINAL), (1.0, Status.NOMINAL),
    (1.12, Status.NOMINAL), (1.1201, Status.GROWTH), (1.8, Status.GROWTH),
    (1.8001, Status.EXPLOSION), (math.inf, Status.NONFINITE), (math.nan, Status.NONFINITE),
])
def test_ladder_edges(ratio: float, status: Status) -> None:
    assert Bands().classify(ratio) is status


def test_default_severities() -> None:
    p = load_policy()
    assert p.classify(0.3, Role.FINAL) == (Status.COLLAPSE, Severity.FAIL)
    assert p.classify(0.45, Role.FINAL) == (Status.LOW, Severity.WARN)
    assert p.classify(1.9, Role.FINAL) == (Status.EXPLOSION, Severity.FAIL)
    assert p.classify(0.3, Role.MTP) == (Status.COLLAPSE, Severity.WARN)
    assert p.classify(0.3, Role.LAYER) == (Status.COLLAPSE, Severity.INFO)
    for role in Role:
        assert p.classify(math.nan, role) == (Status.NONFINITE, Severity.FAIL)


def test_shipped_default_is_the_sample_config() -> None:
    sample = (ROOT / "sample_configs" / "article-default.toml").read_text("utf-8")
    assert default_policy_text() == sample
    assert load_policy(ROOT / "sample_configs" / "article-default.toml").bands == Bands()


# The article's table: model, d_model, init norm, healthy range (rounded as printed there).
ARTICLE = [("LLaMA-3.2-3B", 3072, 55.4, 22, 100), ("LLaMA-3.1-8B", 4096, 64.0, 26, 115),
           ("LLaMA-3.1-70B", 8192, 90.5, 36, 163), ("DeepSeek-V3", 7168, 84.7, 34, 152)]


@pytest.mark.parametrize("model,d,init,lo,hi", ARTICLE)
def test_bands_reproduce_article_table(model: str, d: int, init: float, lo: int,
                                       hi: int) -> None:
    t = bands_table(load_policy(), d, Role.FINAL)
    assert round(t["init_norm"], 1) == init
    assert t["init_norm"] == math.sqrt(d)
    assert (round(t["healthy"][0]), round(t["healthy"][1])) == (lo, hi)
    assert t["bands"]["collapse"] == [None, 0.4 * math.sqrt(d)]
    assert t["bands"]["explosion"] == [1.8 * math.sqrt(d), None]


def test_per_model_policy(tmp_path: Path) -> None:
    p = load_policy(ROOT / "sample_configs" / "stories260k.toml")
    assert p.classify(1.90, Role.FINAL) == (Status.GROWTH, Severity.INFO)
    assert p.classify(1.90, Role.MTP)[0] is Status.EXPLOSION
    strict = load_policy(ROOT / "sample_configs" / "strict-ci.toml")
    assert strict.classify(0.45, Role.FINAL)[1] is Severity.FAIL


@pytest.mark.parametrize("text,match", [
    ("[bands]\ncollapse = 2.0\n", "edges must increase"),
    ("[bands]\nwobble = 1.0\n", "unknown band"),
    ("[severity.final]\ncollapse = 'panic'\n", "severity must be"),
    ("[severity.nowhere]\ncollapse = 'warn'\n", "unknown role"),
    ("[roles.bogus.bands]\ngrowth = 2.0\n", "unknown role"),
    ("this is = = not toml", "not valid TOML"),
])
def test_bad_policies(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "p.toml"
    f.write_text(text)
    with pytest.raises(PolicyError, match=match) as ei:
        load_policy(f)
    assert str(f) in str(ei.value)
