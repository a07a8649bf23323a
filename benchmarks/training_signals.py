"""Do the trend signals catch real training bugs?  ``python benchmarks/training_signals.py``

Trains fresh tiny ``LlamaForCausalLM`` models with the real transformers ``Trainer`` on CPU, a
checkpoint (and an eval) every ``--every`` steps, on data this script makes itself: token streams
from a random sparse Markov chain (each token has 4 likely successors; the chain is fixed by
``DATA_SEED``, so every run sees the same distribution, and the eval set is held out). Runs:

- ``healthy-s0``, ``healthy-s1``: AdamW lr 1e-3 with warmup, the Trainer's own optimizer (which
  exempts norm gains and biases from weight decay), two seeds;
- ``wd-gains``: the same, but the user built ``AdamW(model.parameters(), weight_decay=1.0)``
  themselves, so the norm gains are decayed too (a common real bug);
- ``lr-high``: lr 3e-2 with no warmup.

Then ``ckpt-audit trend`` (the library, default policy) over each run, and for every run and signal
the first step the signal fires, next to the first step the eval loss shows trouble: the eval loss
is above the worse of the two healthy seeds at that step by more than
``max(0.01, |healthy-s0 − healthy-s1|)`` nats. ``--check`` (different width, depth and lr schedule)
re-runs everything with another shape, to test the thresholds away from where they were calibrated.

``--quick`` is the short version the test suite runs (tests/runs/test_training_signals.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

DATA_SEED = 1234
VOCAB = 256
SEQ = 64


@dataclass(frozen=True)
class Shape:
    """Model and schedule of one experiment."""

    width: int = 128
    depth: int = 4
    steps: int = 300
    every: int = 25
    batch: int = 8
    schedule: str = "linear"
    warmup: int = 30
    train_seqs: int = 2048
    eval_seqs: int = 64


@dataclass(frozen=True)
class RunSpec:
    name: str
    seed: int = 0
    lr: float = 1e-3
    warmup: bool = True
    gain_wd: float = 0.0


FULL = Shape()
CHECK = Shape(width=96, depth=6, steps=300, every=20, schedule="cosine", warmup=40)
QUICK = Shape(width=64, depth=2, steps=100, every=20, batch=8, warmup=10, train_seqs=512,
              eval_seqs=32)

RUNS = (RunSpec("healthy-s0", seed=0), RunSpec("healthy-s1", seed=1),
        RunSpec("wd-gains", seed=0, gain_wd=1.0), RunSpec("lr-high", seed=0, lr=3e-2,
                                                          warmup=False))


def markov_tokens(n_seqs: int, seed: int):  # type: ignore[no-untyped-def]
    """``n_seqs`` sequences of ``SEQ`` tokens from the fixed sparse Markov chain."""
    import numpy as np

    chain = np.random.default_rng(DATA_SEED)
    succ = chain.integers(0, VOCAB, size=(VOCAB, 4))
    prob = chain.dirichlet(np.full(4, 0.5), size=VOCAB)
    rng = np.random.default_rng(seed)
    out = np.empty((n_seqs, SEQ), dtype=np.int64)
    out[:, 0] = rng.integers(0, VOCAB, size=n_seqs)
    u = rng.random((n_seqs, SEQ))
    for t in range(1, SEQ):
        cum = np.cumsum(prob[out[:, t - 1]], axis=1)
        k = (u[:, t, None] > cum).sum(axis=1).clip(max=3)
        out[:, t] = succ[out[:, t - 1], k]
    return out


def _dataset(tokens):  # type: ignore[no-untyped-def]
    import torch

    t = torch.from_numpy(tokens)
    return [{"input_ids": r, "labels": r.clone()} for r in t]


def train(out: str, spec: RunSpec, shape: Shape, monitor: Any = None) -> dict[int, float]:
    """Train one run into ``out`` (``checkpoint-N`` folders); return ``{step: eval_loss}``.

    ``monitor``: a :class:`~ckpt_audit.monitor.hf.GainMonitorCallback` to attach to the Trainer.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

    torch.set_num_threads(1)
    torch.manual_seed(spec.seed)
    cfg = LlamaConfig(hidden_size=shape.width, intermediate_size=2 * shape.width,
                      num_hidden_layers=shape.depth, num_attention_heads=4,
                      num_key_value_heads=4, vocab_size=VOCAB, max_position_embeddings=SEQ)
    model = LlamaForCausalLM(cfg)
    args = TrainingArguments(
        output_dir=out, max_steps=shape.steps, per_device_train_batch_size=shape.batch,
        per_device_eval_batch_size=shape.eval_seqs, learning_rate=spec.lr,
        warmup_steps=shape.warmup if spec.warmup else 0, lr_scheduler_type=shape.schedule,
        weight_decay=0.0, save_strategy="steps", save_steps=shape.every, eval_strategy="steps",
        eval_steps=shape.every, logging_steps=shape.every, save_only_model=True,
        report_to="none", use_cpu=True, disable_tqdm=True, seed=spec.seed,
        data_seed=spec.seed)
    optimizers: Any = (None, None)
    if spec.gain_wd:
        # The bug: every parameter decayed, the norm gains included.
        optimizers = (torch.optim.AdamW(model.parameters(), lr=spec.lr,
                                        weight_decay=spec.gain_wd), None)
    trainer = Trainer(model=model, args=args,
                      train_dataset=_dataset(markov_tokens(shape.train_seqs, 100 + spec.seed)),
                      eval_dataset=_dataset(markov_tokens(shape.eval_seqs, 99)),
                      optimizers=optimizers)
    if monitor is not None:
        monitor.attach(trainer)
    trainer.train()
    return {int(h["step"]): float(h["eval_loss"]) for h in trainer.state.log_history
            if "eval_loss" in h}


@dataclass
class RunResult:
    spec: RunSpec
    eval_loss: dict[int, float]
    trend: dict[str, Any]
    exit_code: int
    fires: dict[str, int] = field(default_factory=dict)
    trouble: int | None = None
    monitor: Any = None


def trend_of(run: str) -> tuple[dict[str, Any], int]:
    """``ckpt-audit trend RUN --format json`` (default policy): the document and the exit code."""
    from ckpt_audit.commands.options import OutputFormat
    from ckpt_audit.commands.trend import run_trend

    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        path = fh.name
    try:
        code = run_trend(run, fmt=OutputFormat.JSON, output=path)
        with open(path, encoding="utf-8") as fh:
            return json.load(fh), code
    finally:
        os.unlink(path)


def first_fires(doc: dict[str, Any]) -> dict[str, int]:
    """For each finding (code, gain, severity) at warn or fail: the first step it appears at."""
    out: dict[str, int] = {}
    found = [(c["step"], f) for c in doc["checkpoints"] for f in c["findings"]]
    for step, f in sorted(found + [(f["step"], f) for f in doc["signals"]],
                          key=lambda sf: sf[0]):
        if f["severity"] in ("warn", "fail"):
            key = f"{f['code']} {(f['tensor'] or '').removesuffix('.weight')} ({f['severity']})"
            out.setdefault(key, step)
    return out


def trouble_step(loss: dict[int, float], healthy: list[dict[int, float]]) -> int | None:
    """First step where ``loss`` is worse than both healthy seeds by more than their gap."""
    for step in sorted(loss):
        ref = [h[step] for h in healthy if step in h]
        if len(ref) < 2:
            continue
        margin = max(0.01, abs(ref[0] - ref[1]))
        if not math.isfinite(loss[step]) or loss[step] > max(ref) + margin:
            return step
    return None


def saved_eval_loss(run: str) -> dict[int, float] | None:
    """``{step: eval_loss}`` from the last checkpoint's ``trainer_state.json`` (None: no run)."""
    import glob

    states = sorted(glob.glob(os.path.join(run, "checkpoint-*", "trainer_state.json")),
                    key=lambda p: int(p.split("checkpoint-")[-1].split(os.sep)[0]))
    if not states:
        return None
    with open(states[-1], encoding="utf-8") as fh:
        history = json.load(fh)["log_history"]
    return {int(h["step"]): float(h["eval_loss"]) for h in history if "eval_loss" in h}


def experiment(root: str, shape: Shape, runs: tuple[RunSpec, ...] = RUNS,
               log: Any = None, reuse: bool = False, monitor: bool = False) -> list[RunResult]:
    """Train every run under ``root`` (``reuse``: keep runs already there) and audit it.

    ``monitor``: attach the training-time monitor (measuring at every checkpoint step, never
    acting) and keep it in the result, to compare its signals with ``trend``'s.
    """
    results = []
    for spec in runs:
        t0 = time.perf_counter()
        out = os.path.join(root, spec.name)
        loss = saved_eval_loss(out) if reuse else None
        cb = None
        if loss is None:
            if monitor:
                from ckpt_audit.monitor.hf import GainMonitorCallback

                cb = GainMonitorCallback(every=shape.every, on_violation="ignore")
            loss = train(out, spec, shape, cb)
        doc, code = trend_of(out)
        results.append(RunResult(spec, loss, doc, code, first_fires(doc), monitor=cb))
        if log:
            log(f"{spec.name}: trained + audited in {time.perf_counter() - t0:.1f} s, "
                f"trend {doc['verdict']} (exit {code})")
    healthy = [r.eval_loss for r in results if r.spec.name.startswith("healthy")]
    for r in results:
        r.trouble = trouble_step(r.eval_loss, healthy)
    return results


def table(results: list[RunResult], shape: Shape) -> str:
    """The Markdown table: per run, trend verdict, eval trouble, first step of each signal."""
    lines = [f"Shape: width {shape.width}, depth {shape.depth}, {shape.steps} steps, "
             f"checkpoint every {shape.every}, {shape.schedule} schedule, warmup {shape.warmup}",
             "", "| run | lr | gain wd | eval loss shows trouble | trend verdict (exit) | "
                 "first step each signal fires |", "|---|---|---|---|---|---|"]
    for r in results:
        fires = ", ".join(f"`{k}` {v}" for k, v in sorted(r.fires.items(), key=lambda kv: kv[1]))
        lines.append(f"| {r.spec.name} | {r.spec.lr:g}{'' if r.spec.warmup else ' no warmup'} | "
                     f"{r.spec.gain_wd:g} | {r.trouble if r.trouble is not None else 'never'} | "
                     f"{r.trend['verdict']} ({r.exit_code}) | {fires or 'none'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="The short version (CI).")
    ap.add_argument("--check", action="store_true",
                    help="Another width, depth and lr schedule (cosine, longer warmup).")
    ap.add_argument("--keep", help="Keep the runs in this folder (default: a temporary one).")
    ap.add_argument("--reuse", action="store_true",
                    help="With --keep: audit runs already trained there instead of retraining.")
    ap.add_argument("--json", help="Also write the results here.")
    ns = ap.parse_args(argv)
    shape = QUICK if ns.quick else CHECK if ns.check else FULL
    root = ns.keep or tempfile.mkdtemp(prefix="training-signals-")
    results = experiment(root, shape, log=lambda m: print(m, file=sys.stderr),
                         reuse=ns.reuse and bool(ns.keep))
    print(table(results, shape))
    if ns.json:
        with open(ns.json, "w", encoding="utf-8") as fh:
            json.dump([{"run": r.spec.name, "eval_loss": r.eval_loss, "trouble": r.trouble,
                        "verdict": r.trend["verdict"], "exit": r.exit_code, "fires": r.fires,
                        "final_ratio": {c["step"]: c["final_ratio"]
                                        for c in r.trend["checkpoints"]}}
                       for r in results], fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
