"""``ckpt-audit watch``: each new complete checkpoint audited once, state kept outside the run."""

from __future__ import annotations

import json
import os
import shutil

from ckpt_audit.runs.watch_state import default_state_path
from tests.support.cli import run_cli
from tests.support.runs import tree


def _watch(run: str, state: str, *extra: str):
    return run_cli(["watch", run, "--state", state, "--once", "--settle", "0", "-f", "json",
                    *extra])


def _steps(out: str) -> list[int]:
    return [json.loads(line)["step"] for line in out.splitlines() if line.startswith("{")]


def test_each_checkpoint_audited_once(llama_run, tmp_path):
    state = str(tmp_path / "state.json")
    before = tree(llama_run)
    first = _watch(llama_run, state)
    assert first.code == 0, first.err
    assert _steps(first.out) == [0, 100, 200, 300, 400]
    verdicts = [json.loads(line)["verdict"] for line in first.out.splitlines()]
    assert verdicts == ["pass", "pass", "pass", "fail", "fail"]
    assert _steps(_watch(llama_run, state).out) == []  # nothing new
    shutil.copytree(os.path.join(llama_run, "checkpoint-200"),
                    os.path.join(llama_run, "checkpoint-500"))
    assert _steps(_watch(llama_run, state).out) == [500]
    saved = json.loads(open(state).read())
    assert saved["schema"] == "ckpt-audit.watch-state/1"
    assert {v["step"] for v in saved["audited"].values()} == {0, 100, 200, 300, 400, 500}
    after = tree(llama_run)
    assert {k: v for k, v in after.items() if "checkpoint-500" not in k} == before


def test_incomplete_waits_until_complete(llama_run, tmp_path):
    state = str(tmp_path / "s.json")
    shard = os.path.join(llama_run, "checkpoint-400", "model-00002-of-00003.safetensors")
    hidden = str(tmp_path / "held-back.safetensors")
    shutil.move(shard, hidden)
    assert _steps(_watch(llama_run, state).out) == [0, 100, 200, 300]
    shutil.move(hidden, shard)  # the writer finishes
    assert _steps(_watch(llama_run, state).out) == [400]


def test_exit_on_fail_stops_at_first_failing(llama_run, tmp_path):
    state = str(tmp_path / "s.json")
    res = _watch(llama_run, state, "--exit-on", "fail")
    assert res.code == 1
    assert _steps(res.out) == [0, 100, 200, 300]
    assert "stopping: checkpoint-300" in res.out
    saved = json.loads(open(state).read())
    assert sorted(v["step"] for v in saved["audited"].values()) == [0, 100, 200, 300]


def test_state_never_inside_the_run_and_default_under_cache(llama_run, tmp_path, monkeypatch):
    res = run_cli(["watch", llama_run, "--state", os.path.join(llama_run, "state.json"),
                   "--once"])
    assert res.code == 2 and "must not be inside the run folder" in res.err
    inside_ckpt = os.path.join(llama_run, "checkpoint-0", "s.json")
    assert run_cli(["watch", llama_run, "--state", inside_ckpt, "--once"]).code == 2
    assert not os.path.exists(inside_ckpt)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    res = run_cli(["watch", llama_run, "--once", "--settle", "0", "--max-polls", "1"])
    assert res.code == 0, res.err
    path = default_state_path(llama_run)
    assert path.startswith(str(tmp_path / "cache" / "ckpt-audit" / "watch"))
    assert os.path.isfile(path)
    assert "step      300  checkpoint-300  FAIL" in res.out


def test_polls_and_junit(llama_run, tmp_path):
    junit = tmp_path / "w.xml"
    res = run_cli(["watch", llama_run, "--state", str(tmp_path / "s.json"), "--max-polls", "2",
                   "--interval", "0", "--settle", "0", "--junit", str(junit)])
    assert res.code == 0
    assert res.out.count("checkpoint-300  FAIL") == 1  # audited once over two polls
    assert junit.read_text().count("<testsuite ") == 5  # one per checkpoint, audited once


def test_rewritten_checkpoint_is_audited_again(llama_run, tmp_path):
    import time

    from tests.support.runs import set_gains, tiny_llama

    state = str(tmp_path / "s.json")
    assert len(_steps(_watch(llama_run, state).out)) == 5
    time.sleep(0.01)
    model = tiny_llama(0)
    set_gains(model, 0.2, 1.0, 7)
    model.save_pretrained(os.path.join(llama_run, "checkpoint-100"), max_shard_size="150KB")
    res = _watch(llama_run, state)
    assert _steps(res.out) == [100]
    assert json.loads(res.out.splitlines()[0])["verdict"] == "fail"
