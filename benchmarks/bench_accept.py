#!/usr/bin/env python
"""Benchmark: a whole ``accept`` scoring pass vs a plain trunk forward over the same probe.

Budget: the accept run costs at most 1.3x a plain forward of the trunk over the same probe on
the same device. Both timings use the same loaded model, the same batches and
``torch.inference_mode``; the scoring pass is ``engine.score_batch``, exactly what ``accept_run``
runs per batch. Each timing is the median of ``--repeat`` interleaved runs after one warm-up,
together with the parts of the scoring pass each timed alone (trunk forward, MTP blocks, head
passes, statistics), so that a ratio over budget says where the time goes; the load average is
printed with them (the machine may be shared). Also printed: the end-to-end ``accept_run`` time
including loading and probe reading, and the ``--speculate`` loop's tokens/s with and without
its KV caches.

Models:
- ``stories``: the real stories260K trunk + its trained head (needs ../shared/data); 5 blocks,
  so one MTP block is a 20% increase on its own: the worst case for the ratio.
- ``synthetic``: a random Llama (d=1024, 24 blocks, vocab 32000) with a random depth-1 head in
  DeepSeek HF naming: closer to real models, where one block is a few percent of the trunk
  and the head (run twice) matters.

- ``bigvocab``: a small random Llama (d=256, 2 blocks) with DeepSeek-V3's 129,280-token
  vocabulary over one 4,096-token document: peak RSS (ru_maxrss, each side in its own
  subprocess) above the loaded weights for a plain trunk forward and for the accept scoring
  pass under ``--max-logits-mb`` (plus peak CUDA memory on a GPU). Not part of the tests.

    PYTHONPATH=. python benchmarks/bench_accept.py --model stories --repeat 9
    PYTHONPATH=. python benchmarks/bench_accept.py --model synthetic --docs 8 --repeat 3 \
        --spec-prompts 1 --spec-new-tokens 32
    PYTHONPATH=. python benchmarks/bench_accept.py --model bigvocab
    PYTHONPATH=. python benchmarks/bench_accept.py --model synthetic --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ckpt_audit.mtp.engine import accept_run, batches, score_batch  # noqa: E402
from ckpt_audit.mtp.loader import load  # noqa: E402
from ckpt_audit.mtp.metrics import AcceptSums, chunk_positions  # noqa: E402
from tests.support import mtp_fixture as fixture  # noqa: E402


def make_stories(out: Path) -> Path:
    from safetensors.numpy import load_file

    head = load_file(str(ROOT / "tests/mtp/data/stories260K_mtp1_head.safetensors"))
    return fixture.make_fixture(ROOT.parent / "shared/data/stories260K.bin", out, head)


def make_synthetic(out: Path, d: int = 1024, layers: int = 24, vocab: int = 32000,
                   context: int = 2048) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = dict(model_type="llama", vocab_size=vocab, hidden_size=d, intermediate_size=int(d * 2.75),
               num_hidden_layers=layers, num_attention_heads=d // 64, num_key_value_heads=d // 128,
               max_position_embeddings=context, rms_norm_eps=1e-5, tie_word_embeddings=False,
               rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
               num_nextn_predict_layers=1, architectures=["LlamaForCausalLM"])
    torch.manual_seed(0)
    big = LlamaForCausalLM(LlamaConfig(**{**cfg, "num_hidden_layers": layers + 1}))
    sd = {k: v.detach().numpy() for k, v in big.state_dict().items()}
    rng = np.random.default_rng(0)
    p = f"model.layers.{layers}."
    sd[p + "enorm.weight"] = np.ones(d, np.float32)
    sd[p + "hnorm.weight"] = np.ones(d, np.float32)
    sd[p + "shared_head.norm.weight"] = np.ones(d, np.float32)
    sd[p + "eh_proj.weight"] = rng.normal(0, 0.02, (d, 2 * d)).astype(np.float32)
    return fixture.write_checkpoint(out, cfg, sd)


def probe(path: Path, vocab: int, n: int, length: int) -> Path:
    rng = np.random.default_rng(1)
    path.write_text("".join(json.dumps({"input_ids": [1] + rng.integers(3, vocab, length - 1)
                                        .tolist()}) + "\n" for _ in range(n)))
    return path


def interleaved(fns: list, repeat: int, sync) -> list[float]:  # type: ignore[type-arg]
    """Median wall time of each function over ``repeat`` runs interleaved (A B A B ...) so that
    a shared machine's load changes hit both alike; one warm-up run each first."""
    for fn in fns:
        fn()
    sync()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            sync()
            times[i].append(time.perf_counter() - t)
    return [float(np.median(t)) for t in times]


def breakdown(m, bl, temps: list[float], max_logits_mb: float) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """The scoring pass in parts, each a function over every batch: the trunk forward (no
    logits but the last position's), the MTP blocks, the head over the verifier's and every
    depth's positions, and the statistics over those logits (precomputed; skipped when they
    would exceed 4 GiB)."""
    from ckpt_audit.mtp.modules import chain_hidden

    with torch.inference_mode():
        pre = [(ids, lengths, m.trunk(ids, last_logits_only=True)) for ids, lengths in bl]
        hs = [chain_hidden(m.trunk, m.depths, out, ids) for ids, _, out in pre]
        size = sum(ids.numel() for ids, _ in bl) * m.vocab_size * 4 * (1 + len(m.depths))
        if size > 4 * 2**30:
            return {}

        def heads(ids, out, h):  # type: ignore[no-untyped-def]
            L = ids.shape[1]
            return (m.trunk.verifier_logits(out.hidden),
                    [m.trunk.draft_logits(d, x[:, : L - k])
                     for k, (d, x) in enumerate(zip(m.depths, h, strict=True), start=1)])

        logits = [heads(ids, out, h) for (ids, _, out), h in zip(pre, hs, strict=True)]

    def trunk() -> None:
        with torch.inference_mode():
            for ids, _ in bl:
                m.trunk(ids, last_logits_only=True)

    def blocks() -> None:
        with torch.inference_mode():
            for ids, _, out in pre:
                chain_hidden(m.trunk, m.depths, out, ids)

    def head() -> None:
        with torch.inference_mode():
            for (ids, _, out), h in zip(pre, hs, strict=True):
                heads(ids, out, h)

    def stats() -> None:
        sums = AcceptSums(len(m.depths), temps, m.device)
        with torch.inference_mode():
            for (ids, lengths, _), (p, qs) in zip(pre, logits, strict=True):
                chunk = chunk_positions(max_logits_mb, ids.shape[0], p.shape[-1], len(temps),
                                        len(m.depths))
                sums.add(p, qs, ids, lengths, chunk)
        sums.figures()

    return {"trunk forward (last position's logits only)": trunk,
            f"MTP blocks ({len(m.depths)} depth(s), eh_proj + block)": blocks,
            "head matmuls (final norms + head, verifier + drafts)": head,
            "statistics (argmax, softmax, entropies, min-sums)": stats}


def bench_speculate(m, seqs: list[list[int]], prompt: int, new: int, repeat: int,
                    sync) -> None:  # type: ignore[no-untyped-def]
    """tokens/s of the greedy draft-and-verify loop with and without the KV caches."""
    from ckpt_audit.mtp.speculate import cacheable, speculate_cached, speculate_one

    if not cacheable(m.trunk, m.depths):
        print("speculate: this trunk's cache cannot be rolled back; the loop runs uncached")
        return
    generated = [0]

    def run(loop):  # type: ignore[no-untyped-def]
        def go() -> None:
            n = 0
            with torch.inference_mode():
                for s in seqs:
                    r = loop(m.trunk, m.depths, s[:prompt], new, m.device)
                    n += len(r["sequence"]) - prompt
            generated[0] = n
        return go

    t_cached, t_plain = interleaved([run(speculate_cached), run(speculate_one)], repeat, sync)
    n = generated[0]
    print(f"speculate ({len(seqs)} prompts of {prompt}, {new} new tokens each, medians): "
          f"cached {n / t_cached:,.1f} tok/s, uncached {n / t_plain:,.1f} tok/s, "
          f"speed-up {t_plain / t_cached:.2f}x")


def make_bigvocab(out: Path) -> Path:
    return make_synthetic(out, d=256, layers=2, vocab=129_280, context=4096)


def rss_child(args: argparse.Namespace) -> int:
    """One side of the memory benchmark in a fresh process: load, note ru_maxrss (the weights
    and the interpreter), run once, note ru_maxrss again; print one JSON line."""
    import resource

    m = load(args.ckpt, device=args.device, dtype=args.dtype)
    ids = [json.loads(x)["input_ids"] for x in Path(args.probe).read_text().splitlines()]
    cuda = m.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    base_cuda = torch.cuda.memory_allocated() if cuda else 0
    t = time.perf_counter()
    with torch.inference_mode():
        if args.rss_child == "plain":
            for b, _ in batches(ids, args.batch_size, m.device):
                m.model(input_ids=b, use_cache=False)
        else:
            accept_run(args.ckpt, args.probe, loaded=m, batch_size=args.batch_size,
                       max_logits_mb=args.max_logits_mb)
    if cuda:
        torch.cuda.synchronize()
    sec = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"base_mib": base / 1024, "peak_mib": peak / 1024, "seconds": sec,
                      "cuda_above_mib": (torch.cuda.max_memory_allocated() - base_cuda) / 2**20
                      if cuda else None}))
    return 0


def bench_memory(args: argparse.Namespace) -> int:
    """Peak RSS above the weights: plain trunk forward vs accept under --max-logits-mb."""
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        ck = make_bigvocab(Path(tmp) / "ck")
        pf = probe(Path(tmp) / "probe.jsonl", 129_280, args.docs, args.length)
        res = {}
        for side in ("plain", "accept"):
            cmd = [sys.executable, __file__, "--rss-child", side, "--ckpt", str(ck), "--probe",
                   str(pf), "--device", args.device, "--dtype", args.dtype, "--batch-size",
                   str(args.batch_size), "--max-logits-mb", str(args.max_logits_mb)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            res[side] = json.loads(out.strip().splitlines()[-1])
    print(f"model bigvocab (d=256, 2 blocks, vocab 129,280), {args.docs} x {args.length} "
          f"tokens, batch {args.batch_size}, device {args.device}, "
          f"--max-logits-mb {args.max_logits_mb:g}")
    for side, what in (("plain", "plain trunk forward"), ("accept", "accept scoring pass")):
        r = res[side]
        cuda = f", peak CUDA above weights {r['cuda_above_mib']:,.0f} MiB" \
            if r["cuda_above_mib"] is not None else ""
        print(f"{what:20}: {r['seconds']:7.2f} s, peak RSS {r['peak_mib']:,.0f} MiB, "
              f"above the loaded weights {r['peak_mib'] - r['base_mib']:,.0f} MiB{cuda}")
    print(f"ratio (one run each): {res['accept']['seconds'] / res['plain']['seconds']:.3f}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["stories", "synthetic", "bigvocab"], default="stories")
    ap.add_argument("--max-logits-mb", type=float, default=1024.0)
    ap.add_argument("--rss-child", choices=["plain", "accept"], help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", help=argparse.SUPPRESS)
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--docs", type=int, default=32)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--spec-prompts", type=int, default=4,
                    help="prompts for the --speculate timing (0: skip it)")
    ap.add_argument("--spec-new-tokens", type=int, default=96)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_child:
        return rss_child(args)
    if args.model == "bigvocab":
        if "--docs" not in sys.argv:
            args.docs, args.length, args.batch_size = 1, 4096, 1
        return bench_memory(args)
    with tempfile.TemporaryDirectory() as tmp:
        ck = (make_stories if args.model == "stories" else make_synthetic)(Path(tmp) / "ck")
        m = load(str(ck), device=args.device, dtype=args.dtype)
        pf = probe(Path(tmp) / "probe.jsonl", m.vocab_size, args.docs, args.length)
        seqs = [json.loads(x)["input_ids"] for x in pf.read_text().splitlines()]
        bl = list(batches(seqs, args.batch_size, m.device))
        sync = torch.cuda.synchronize if m.device.type == "cuda" else (lambda: None)

        def plain() -> None:
            with torch.inference_mode():
                for ids, _ in bl:
                    m.model(input_ids=ids, use_cache=False)

        temps = [1.0]

        def scoring() -> None:  # exactly what accept_run does per batch
            sums = AcceptSums(len(m.depths), temps, m.device)
            with torch.inference_mode():
                for ids, lengths in bl:
                    score_batch(m, ids, lengths, sums, args.max_logits_mb)
            sums.figures()

        parts = breakdown(m, bl, temps, args.max_logits_mb)
        load0 = os.getloadavg()
        times = interleaved([plain, scoring, *parts.values()], args.repeat, sync)
        load1 = os.getloadavg()
        t_plain, t_acc = times[:2]
        t0 = time.perf_counter()
        accept_run(str(ck), str(pf), device=args.device, dtype=args.dtype,
                   batch_size=args.batch_size, max_logits_mb=args.max_logits_mb)
        t_e2e = time.perf_counter() - t0
    ntok = args.docs * args.length
    print(f"model {args.model}, device {m.device} {str(m.dtype).replace('torch.', '')}, "
          f"{args.docs} x {args.length} tokens, batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}, load average {load0[0]:.2f} at the start, "
          f"{load1[0]:.2f} at the end (1 min)")
    print(f"medians of {args.repeat} interleaved runs")
    print(f"plain trunk forward : {t_plain:8.3f} s  ({ntok / t_plain:,.0f} tok/s)")
    print(f"accept scoring pass : {t_acc:8.3f} s  ({ntok / t_acc:,.0f} tok/s)  "
          "(trunk + MTP chain + heads + all per-depth statistics)")
    print(f"ratio               : {t_acc / t_plain:8.3f}  (budget 1.3)")
    if parts:
        print("where the scoring pass goes, each part timed alone (x plain trunk forward):")
        for (name, _), t in zip(parts.items(), times[2:], strict=True):
            print(f"  {name:42}: {t:8.3f} s  {t / t_plain:6.3f}x")
        print(f"  {'sum of the parts':42}: {sum(times[2:]):8.3f} s  "
              f"{sum(times[2:]) / t_plain:6.3f}x")
    print(f"accept_run end to end (load + probe + score): {t_e2e:.3f} s")
    if args.spec_prompts:
        bench_speculate(m, seqs[: args.spec_prompts], 8, args.spec_new_tokens,
                        max(1, args.repeat // 2), sync)
    return 0


if __name__ == "__main__":
    sys.exit(main())
