"""Habits of a command-line tool: -h everywhere, help on every option, choices listed, flags
as flags, one-line input errors (exit 2), filters that match nothing named, the verdict on
stderr when the report goes to a file, a closed pipe that exits quietly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ckpt_audit.demo import write_demo_run
from tests.support.cli import run_cli
from tests.support.paths import ROOT


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    paths = write_demo_run(str(tmp_path_factory.mktemp("habits")))
    paths["run"] = os.path.dirname(paths["step 0"])
    return paths


def _commands():
    import typer

    from ckpt_audit.cli import app, register_commands

    register_commands()  # every command, whatever ran before (alone, only some are registered)
    return typer.main.get_command(app)


def test_help_on_every_option_and_choices_listed():
    group = _commands()
    assert run_cli(["-h"]).code == 0
    for name, cmd in group.commands.items():
        res = run_cli([name, "-h"])
        assert res.code == 0 and "Usage" in res.out, name
        for param in cmd.params:
            if param.param_type_name == "option":
                assert (param.help or "").strip(), f"{name} {param.opts} has no help"
    choices = {p.name: list(getattr(p.type, "choices", None) or [])
               for p in group.commands["trend"].params}
    assert {"table", "json", "markdown", "junit", "html"} <= {str(getattr(c, "value", c))
                                                           for c in choices["fmt"]}
    for name in ("format_hint", "convention", "fail_on", "incomplete"):
        assert choices[name], f"--{name} is not a listed choice"
    assert "markdown" in run_cli(["trend", "-h"]).out
    audit = run_cli(["audit", "-h"]).out
    line = next(ln for ln in audit.splitlines() if "--expect-init" in ln)
    assert "<bool>" not in line  # a flag, not an option taking a value
    assert "<bool>" not in next(ln for ln in audit.splitlines() if "--help" in ln)
    assert "--install-completion" in run_cli(["-h"]).out


@pytest.mark.parametrize("args, says", [
    (["trend", "RUN", "--gains", "("], "not a valid regular expression"),
    (["trend", "RUN", "--roles", "bogus"], "choose from final, layer"),
    (["trend", "RUN", "--gains", "nomatch"], "gains present: model.layers.0"),
    (["trend", "RUN", "--format-hint", "nope"], "is not one of"),
    (["trend", "RUN", "-f", "pdf"], "is not one of"),
    (["audit", "CK", "--convention", "both"], "is not one of"),
    (["compare", "RUN", "RUN", "--plot", "PLOT", "--gain", "nope"], "--gain 'nope' matches no"),
    (["compare", "RUN", "RUN", "--gain", "nope"], "--gain 'nope' matches no"),
])
def test_input_errors_are_one_line_exit_2(demo, tmp_path, args, says):
    args = [{"RUN": demo["run"], "CK": demo["step 0"], "PLOT": str(tmp_path / "p.png")}.get(a, a)
            for a in args]
    res = run_cli(args)
    assert res.code == 2, res.err
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], res.err
    assert "Traceback" not in res.err and not (tmp_path / "p.png").exists()


def test_output_file_says_the_verdict_and_where(demo, tmp_path):
    out = tmp_path / "r.md"
    res = run_cli(["audit", demo["step 2000"], "-f", "markdown", "-o", str(out)])
    assert res.code == 1 and res.out == ""
    assert res.err.strip() == (f"ckpt-audit: FAIL (1 finding: 1 fail); markdown report "
                               f"written to {out}")
    png = tmp_path / "t.png"
    res = run_cli(["trend", demo["run"], "-f", "json", "-o", str(tmp_path / "t.json"),
                   "--plot", str(png)])
    assert f"plot written to {png}" in res.err and png.stat().st_size > 0


def test_expect_init_pass_line_and_digits(demo):
    import re

    ok = run_cli(["audit", demo["step 0"], "--expect-init"])
    assert ok.code == 0 and "step-0 check passed: all 9 gains" in ok.err
    bad = run_cli(["audit", demo["step 1000"], "--expect-init", "-f", "json"])
    assert bad.code == 1
    import json

    msgs = [f["message"] for f in json.loads(bad.out)["findings"] if f["code"] == "init-mismatch"]
    assert msgs and all("|Δ| = " in m and "tolerance 0.01" in m for m in msgs)
    assert all(re.search(r"‖γ‖₂ = \d+\.\d{4}", m) for m in msgs)  # digits to check 0.01


def test_closed_pipe_exits_quietly(demo):
    code = ("import sys; from ckpt_audit.cli import main; "
            "main(['demo', '--dir', sys.argv[1]])")
    p = subprocess.Popen([sys.executable, "-c", code, demo["run"] + "-demo"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.stdout is not None
    p.stdout.readline()
    p.stdout.close()  # like `| head -1`
    _, err = p.communicate(timeout=120)
    assert p.returncode == 141, err
    assert b"Traceback" not in err and b"Exception ignored" not in err


def test_watch_says_its_state_file_and_nothing_new(demo, tmp_path):
    state = tmp_path / "state.json"
    args = ["watch", demo["run"], "--once", "--settle", "0", "--state", str(state)]
    first = run_cli(args)
    assert f"state file {state}" in first.err
    again = run_cli(args)
    assert "nothing new" in again.err and again.out == ""


def test_input_errors_of_one_run_come_together(demo):
    res = run_cli(["trend", demo["run"], "--roles", "x", "--gains", "(", "--jump", "-1"])
    assert res.code == 2
    [line] = res.err.strip().splitlines()
    assert "--roles" in line and "--gains" in line and "--jump" in line


def test_github_outputs_on_every_command(demo, tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    for args in (["audit", demo["step 2000"]], ["diff", demo["step 0"], demo["step 2000"],
                                                 "--max-change", "0.1"],
                 ["compare", demo["run"], demo["run"]], ["trend", demo["run"]]):
        res = run_cli([*args, "-f", "json", "--github"])
        assert "title=ckpt-audit collapse::model.norm.weight" in res.out, args
    text = summary.read_text()
    for head in ("## ckpt-audit: ", "## ckpt-audit diff", "## ckpt-audit compare",
                 "## ckpt-audit trend"):
        assert head in text


_PROBE_ENV = ("import atexit, os, sys\n"
              "atexit.register(lambda: sys.stderr.write("
              "'BLAS=' + os.environ.get('OPENBLAS_NUM_THREADS', 'unset') + "
              "' NUMPY=' + str('numpy' in sys.modules) + '\\n'))\n"
              "sys.argv = ['ckpt-audit'] + sys.argv[1:]\n"
              "from ckpt_audit.cli import main\n"
              "main()\n")


def _blas_setting(args: list[str], env: dict[str, str] | None = None) -> str:
    run_env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    run_env.update(env or {}, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", _PROBE_ENV, *args], capture_output=True,
                         text=True, env=run_env, timeout=120)
    return res.stderr.strip().splitlines()[-1]


def test_numpy_starts_without_blas_threads_unless_a_model_runs(demo: dict[str, str]) -> None:
    """An audit imports numpy with OpenBLAS's pool at one thread (no linear algebra there);
    ``accept`` and ``audit --probe`` keep the default, and the user's own setting wins."""
    assert _blas_setting(["audit", demo["step 0"], "-f", "json"]) == "BLAS=1 NUMPY=True"
    assert _blas_setting(["audit", demo["step 0"], "-f", "json"],
                         {"OPENBLAS_NUM_THREADS": "4"}) == "BLAS=4 NUMPY=True"
    assert _blas_setting(["audit", demo["step 0"], "--probe", "none.jsonl"]).startswith(
        "BLAS=unset")
    assert _blas_setting(["accept", "-h"]).startswith("BLAS=unset")


def test_the_console_entry_exits_quickly_and_loses_nothing(demo):
    """The console script (``cli.entry``) ends the process with ``os._exit`` once a command is
    done: its status, every byte of its output and the exit handlers must all survive that."""
    code = ("import atexit, sys; atexit.register(lambda: sys.stderr.write('handlers ran\\n')); "
            "from ckpt_audit.cli import entry; sys.argv[0] = 'ckpt-audit'; entry()")
    for args in (["audit", demo["step 3000"], "--format", "json"],
                 ["audit", demo["step 0"], "--format", "markdown"],
                 ["audit", demo["step 0"] + "-missing"]):
        p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                           cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
        ref = run_cli(args)
        assert (p.returncode, p.stdout) == (ref.code, ref.out), args
        assert p.stderr.endswith("handlers ran\n") and ref.err in p.stderr, args
    assert ref.code == 2 and p.stderr.count("\n") == 2  # the one error line, then the handler


def test_exit_status_follows_the_interpreter():
    from ckpt_audit.cli import exit_status

    assert [exit_status(c) for c in (None, 0, 1, 2, 141)] == [0, 0, 1, 2, 141]
    assert exit_status("a message") == 1  # printed to stderr first, as sys.exit does


def test_the_console_entry_keeps_its_status_with_stderr_closed_and_under_oo(demo):
    """Started with stderr closed (cron's ``2>&-``: ``sys.stderr`` is None) a passing audit still
    exits 0 and a failing one 1; ``python -OO`` (no docstrings) still starts."""
    code = "import sys; from ckpt_audit.cli import entry; sys.argv[0] = 'ckpt-audit'; entry()"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for path in (demo["step 0"], demo["step 3000"]):
        ref = run_cli(["audit", path])
        p = subprocess.run([sys.executable, "-c", code, "audit", path], stdout=subprocess.PIPE,
                           cwd=ROOT, env=env, timeout=120, preexec_fn=lambda: os.close(2))
        assert p.returncode == ref.code, path
    assert {run_cli(["audit", demo["step 0"]]).code, run_cli(["audit", demo["step 3000"]]).code} \
        == {0, 1}
    p = subprocess.run([sys.executable, "-OO", "-m", "ckpt_audit", "--version"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert p.returncode == 0 and p.stdout.startswith("ckpt-audit "), p.stderr
