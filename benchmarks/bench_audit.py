"""Benchmark the local audit (issue: audit). Run: ``python benchmarks/bench_audit.py [--quick]``.

1. A sharded Llama-shaped safetensors checkpoint of a few GB (real data, written with the
   official ``safetensors`` library): ``audit_checkpoint`` versus loading every shard
   (``safetensors.numpy.load_file``). Target: the audit is at least 100× faster.
2. A DeepSeek-V3-shaped checkpoint (162 shards, ~92k tensors, ~688 GB apparent, sparse files from
   ``dsv3_shape.py``), as whole processes side by side: ``ckpt-audit audit DIR --format json``
   versus ``floor_audit.py DIR``, a bare script that ``json.loads`` each header and ``pread``s
   each gain into numpy. Runs are interleaved; the medians of wall time and of CPU time (user +
   system, steadier on a shared machine) are printed with their ratios. Target: ≤ 1.5×.
   In process: ``audit_checkpoint`` versus the same bare loop.
3. ``ckpt-audit audit`` process start-up on safetensors with and without importing torch.

In-process times are the best of ``--repeat`` runs with a warm page cache (the same for both
sides). Byte-code is compiled once before the process runs (as an installed package has it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from floor_audit import read_all  # noqa: E402

from ckpt_audit.core.audit import audit_checkpoint  # noqa: E402


def best(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def write_llama(root: str, gb: float) -> int:
    from safetensors.numpy import save_file

    d, ffn = 4096, 11008
    per_layer = (4 * d * d + 3 * d * ffn) * 2  # bf16-sized bytes; stored as F16 here
    layers = max(1, int(gb * 1e9 // per_layer))
    rng = np.random.default_rng(0)
    block = (rng.standard_normal(d * ffn).astype(np.float16) * 0.02)
    weight_map = {}
    total = 0
    for i in range(layers):
        t = {
            f"model.layers.{i}.input_layernorm.weight": np.ones(d, np.float16),
            f"model.layers.{i}.post_attention_layernorm.weight": np.ones(d, np.float16),
            f"model.layers.{i}.self_attn.qkvo.weight": block[: 4 * d * d // 4 * 4].reshape(-1, d)[
                : 4 * d],
            f"model.layers.{i}.mlp.gate_up_down.weight": np.concatenate(
                [block, block, block]).reshape(-1, d),
        }
        if i == layers - 1:
            t["model.norm.weight"] = np.full(d, 0.8, np.float16)
        name = f"model-{i + 1:05d}-of-{layers:05d}.safetensors"
        save_file(t, os.path.join(root, name))
        total += os.path.getsize(os.path.join(root, name))
        weight_map.update({k: name for k in t})
    with open(os.path.join(root, "model.safetensors.index.json"), "w") as fh:
        json.dump({"weight_map": weight_map}, fh)
    with open(os.path.join(root, "config.json"), "w") as fh:
        json.dump({"model_type": "llama", "hidden_size": d, "num_hidden_layers": layers}, fh)
    return total


def load_all(root: str) -> None:
    from safetensors.numpy import load_file

    for name in sorted(os.listdir(root)):
        if name.endswith(".safetensors"):
            load_file(os.path.join(root, name))


def bare_loop(root: str) -> None:
    """Parse each header and pread each gain: the floor any header+gain reader pays."""
    read_all(root)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOOR = os.path.join(ROOT, "benchmarks", "floor_audit.py")


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, env=env, check=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def processes(path: str, runs: int) -> dict[str, float]:
    """``ckpt-audit audit PATH --format json`` and ``floor_audit.py PATH`` as processes,
    interleaved ``runs`` times: medians of wall and CPU seconds, and the ratios. The floor runs
    twice per round: as the bare script it is, and with ``OPENBLAS_NUM_THREADS=1``, the setting
    the audit gives itself (``ckpt_audit.cli.quiet_blas``), so the ratio is also shown for the
    same numpy start-up on both sides."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("OPENBLAS_NUM_THREADS", None)
    quiet = dict(env, OPENBLAS_NUM_THREADS="1")
    audit = [sys.executable, "-m", "ckpt_audit", "audit", path, "--format", "json"]
    floor = [sys.executable, FLOOR, path]
    _timed(audit, env), _timed(floor, env)  # byte-code written, page cache warm
    a, f, q = [], [], []
    for _ in range(runs):
        a.append(_timed(audit, env))
        f.append(_timed(floor, env))
        q.append(_timed(floor, quiet))
    out: dict[str, float] = {}
    for key, samples in (("audit", a), ("floor", f), ("floor_quiet", q)):
        out[f"{key}_wall"] = statistics.median(w for w, _ in samples)
        out[f"{key}_cpu"] = statistics.median(c for _, c in samples)
        out[f"{key}_cpu_min"] = min(c for _, c in samples)
    for floor_key in ("floor", "floor_quiet"):
        out[f"ratio_wall_{floor_key}"] = out["audit_wall"] / out[f"{floor_key}_wall"]
        out[f"ratio_cpu_{floor_key}"] = out["audit_cpu"] / out[f"{floor_key}_cpu"]
        # the fastest run of each side: what a busy shared machine perturbs least
        out[f"ratio_cpu_min_{floor_key}"] = out["audit_cpu_min"] / out[f"{floor_key}_cpu_min"]
    return out


def print_processes(pr: dict[str, float], runs: int) -> None:
    print(f"DeepSeek-V3 shape as processes (median of {runs}, interleaved): "
          f"`ckpt-audit audit DIR --format json` {pr['audit_wall']:.2f} s wall / "
          f"{pr['audit_cpu']:.2f} s CPU, floor script {pr['floor_wall']:.2f} s / "
          f"{pr['floor_cpu']:.2f} s -> {pr['ratio_wall_floor']:.2f}x the floor (wall), "
          f"{pr['ratio_cpu_floor']:.2f}x (CPU; {pr['ratio_cpu_min_floor']:.2f}x fastest to "
          "fastest); target <= 1.5x")
    print(f"  the floor with OPENBLAS_NUM_THREADS=1 as the audit sets it: "
          f"{pr['floor_quiet_wall']:.2f} s / {pr['floor_quiet_cpu']:.2f} s -> "
          f"{pr['ratio_wall_floor_quiet']:.2f}x (wall), {pr['ratio_cpu_floor_quiet']:.2f}x "
          f"(CPU; {pr['ratio_cpu_min_floor_quiet']:.2f}x fastest to fastest)")


def startup(path: str) -> tuple[float, float]:
    cmd = [sys.executable, "-m", "ckpt_audit", "audit", path, "-f", "json"]
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    t0 = time.perf_counter()
    subprocess.run(cmd, capture_output=True, env=env)
    t_audit = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], capture_output=True)
    return t_audit, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=3.0, help="size of the dense checkpoint")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--runs", type=int, default=9, help="process runs of each side")
    ap.add_argument("--quick", action="store_true", help="0.5 GB and one repeat")
    ap.add_argument("--process-only", action="store_true",
                    help="only the DeepSeek-V3 shape as processes (item 2's headline ratio)")
    args = ap.parse_args()
    if args.quick:
        args.gb, args.repeat = 0.5, 1
    from dsv3_shape import make_deepseek_v3_sparse

    with tempfile.TemporaryDirectory() as tmp:
        if args.process_only:
            make_deepseek_v3_sparse(os.path.join(tmp, "dsv3"))
            print_processes(processes(os.path.join(tmp, "dsv3"), args.runs), args.runs)
            return
        dense = os.path.join(tmp, "dense")
        os.makedirs(dense)
        size = write_llama(dense, args.gb)
        load_all(dense)  # warm the page cache for both sides
        t_audit = best(lambda: audit_checkpoint(dense), args.repeat)
        t_load = best(lambda: load_all(dense), args.repeat)
        print(f"dense {size / 1e9:.2f} GB, {len(os.listdir(dense)) - 2} shards: audit "
              f"{t_audit * 1e3:.1f} ms, load all shards {t_load * 1e3:.0f} ms -> "
              f"{t_load / t_audit:.0f}x faster")
        sparse = os.path.join(tmp, "dsv3")
        ck = make_deepseek_v3_sparse(sparse)
        bare_loop(sparse)
        rep = audit_checkpoint(sparse)
        t_bare, t_audit = [], []
        for _ in range(args.repeat):  # interleaved, so both see the same machine state
            t_bare.append(best(lambda: bare_loop(sparse), 1))
            t_audit.append(best(lambda: audit_checkpoint(sparse), 1))
        from ckpt_audit.core.audit import gc_paused

        def bare_no_gc() -> None:
            with gc_paused():
                bare_loop(sparse)

        t_bare_nogc = best(bare_no_gc, args.repeat)
        ta, tb = min(t_audit), min(t_bare)
        print(f"DeepSeek-V3 shape: {len(ck.shards)} shards, {ck.tensor_count} tensors, "
              f"{ck.apparent_bytes / 1e9:.0f} GB apparent, {len(rep.norms)} gains: audit "
              f"{ta * 1e3:.0f} ms, bare header+pread loop {tb * 1e3:.0f} ms -> "
              f"{ta / tb:.2f}x the bare loop ({ta / t_bare_nogc:.2f}x the same loop with the "
              f"garbage collector paused, {t_bare_nogc * 1e3:.0f} ms); "
              f"bytes read {rep.bytes_read:,} "
              f"(headers {ck.header_bytes:,} + gains {ck.gain_bytes:,} + small files "
              f"{ck.small_file_bytes:,})")
        print_processes(processes(sparse, args.runs), args.runs)
        t_cli, t_torch = startup(os.path.join(dense))
        print(f"process: `ckpt-audit audit` on safetensors {t_cli:.2f} s end to end "
              f"(does not import torch); `import torch` alone {t_torch:.2f} s")


if __name__ == "__main__":
    main()
