"""Every command's JSON validates against the schema shipped in the package (jsonschema), and
the schemas reject what they should (so the validation could fail)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jsonschema
import pytest

from ckpt_audit.demo import write_demo_run
from ckpt_audit.report.schemas import DOCUMENTS, SHARED, schema, validate
from tests.support.cli import run_cli


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = str(tmp_path_factory.mktemp("schemas"))
    paths = write_demo_run(os.path.join(root, "demo"))
    paths["run"] = os.path.dirname(paths["step 0"])
    paths["run_b"] = os.path.join(root, "run_b")
    shutil.copytree(paths["run"], paths["run_b"])
    return paths


def _json(args: list[str]) -> dict:
    res = run_cli(args)
    assert res.code in (0, 1), res.err
    return json.loads(res.out)


def test_every_schema_is_shipped_and_well_formed():
    for stem in (*DOCUMENTS.values(), *SHARED):
        jsonschema.Draft202012Validator.check_schema(schema(stem))
    import tomllib

    data = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert "schemas/*.json" in data["tool"]["setuptools"]["package-data"]["ckpt_audit"]


def test_every_command_json_validates(demo: dict[str, str], tmp_path: Path):
    base = tmp_path / "base.json"
    assert run_cli(["audit", demo["step 0"], "-f", "json", "-o", str(base)]).code == 0
    docs = [
        *[_json(["audit", demo[k], "-f", "json"]) for k in ("step 0", "step 2000", "mtp")],
        _json(["audit", demo["step 3000"], "-f", "json", "--baseline", str(base)]),
        _json(["bands", "--d-model", "256", "-f", "json"]),
        _json(["trend", demo["run"], "-f", "json", "--baseline", str(base)]),
        _json(["compare", demo["run"], demo["run_b"], "-f", "json"]),
        _json(["diff", demo["step 0"], demo["step 3000"], "-f", "json",
                        "--max-change", "0.1"]),
    ]
    watch = run_cli(["watch", demo["run"], "--once", "--settle", "0", "-f", "json",
                     "--state", str(tmp_path / "state.json")])
    docs += [json.loads(line) for line in watch.out.splitlines() if line.startswith("{")]
    assert {d["schema"] for d in docs} == set(DOCUMENTS) - {"ckpt-audit.accept/1"}
    for doc in docs:  # accept's JSON: tests/mtp/test_accept_cli.py
        validate(doc)


def test_schemas_reject_what_is_wrong(demo: dict[str, str]):
    doc = _json(["audit", demo["step 2000"], "-f", "json"])
    for broken in ({**doc, "verdict": "fine"}, {k: v for k, v in doc.items() if k != "norms"},
                   {**doc, "findings": [{"severity": "fail", "code": "x"}]}):
        with pytest.raises(jsonschema.ValidationError):
            validate(broken)
