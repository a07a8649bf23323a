"""Benchmark: audit a DeepSeek-V3-shaped checkpoint over HTTP on loopback, counting every byte.

Writes the sparse 162-shard, ~688 GB-apparent checkpoint of :mod:`dsv3_shape` (a few MB on disk),
serves it with ``tests/support/range_server.py`` on 127.0.0.1 (a real HTTP/1.1 server that
honours Range and counts the body bytes it sends), runs ``ckpt-audit``'s audit on the folder URL
and checks:

- every gain's figures equal numpy's on the values that were written (float64 norm / √n);
- bytes fetched (client count, and server count) ≤ 1.3 × (metadata + gains), where metadata =
  the 162 shard headers (8-byte length + JSON) + ``model.safetensors.index.json`` + ``config.json``
  (the index of a sharded checkpoint is its header: it must be read to find the shards);
- wall time (printed; "a few seconds" is the target).

Run: ``PYTHONPATH=$PWD python benchmarks/bench_remote.py [--dir DIR] [--keep]``. Prints one JSON
object; exits 1 when a figure differs or the byte budget is exceeded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dsv3_shape import make_deepseek_v3_sparse  # noqa: E402

from tests.support.range_server import RangeServer  # noqa: E402

BUDGET = 1.3


def _expected(gains: dict[str, np.ndarray]) -> dict[str, float]:
    return {n: float(np.linalg.norm(v.astype(np.float64)) / math.sqrt(v.size))
            for n, v in gains.items()}


def _audit(url: str) -> tuple[dict[str, float], int, str]:
    """Audit through the audit core when present, else through the reader interface."""
    import ckpt_audit

    if os.path.exists(os.path.join(os.path.dirname(ckpt_audit.__file__), "audit.py")):
        from ckpt_audit.core.audit import audit_checkpoint

        report = audit_checkpoint(url)
        ratios = {rec.name: rec.stats.ratio for rec in report.norms}
        return ratios, report.bytes_read, f"audit_checkpoint (verdict {report.verdict})"
    from ckpt_audit.readers.registry import open_checkpoint

    with open_checkpoint(url) as reader:
        names = [n for n in reader.tensors() if n.endswith(("norm.weight", "layernorm.weight"))]
        values = reader.read_many(names)
        ratios = {n: float(np.linalg.norm(v.astype(np.float64)) / math.sqrt(v.size))
                  for n, v in values.items()}
        return ratios, reader.bytes_read, "reader interface (audit core not present)"


def run(root: str) -> dict[str, object]:
    t0 = time.perf_counter()
    ck = make_deepseek_v3_sparse(os.path.join(root, "dsv3"))
    t_gen = time.perf_counter() - t0
    metadata = ck.header_bytes + ck.small_file_bytes
    budget = BUDGET * (metadata + ck.gain_bytes)
    with RangeServer(root) as srv:
        t1 = time.perf_counter()
        ratios, client_bytes, mode = _audit(srv.url("dsv3/"))
        wall = time.perf_counter() - t1
        served, requests = srv.bytes_served, len(srv.requests)
    expected = _expected(ck.gains)
    missing = sorted(set(expected) - set(ratios))
    worst = max((abs(ratios[n] - r) for n, r in expected.items() if n in ratios), default=0.0)
    fetched = max(client_bytes, served)
    ok = not missing and worst < 1e-9 and fetched <= budget
    return {
        "ok": ok, "mode": mode, "shards": len(ck.shards), "tensors": ck.tensor_count,
        "gains": len(ck.gains), "apparent_gb": round(ck.apparent_bytes / 1e9, 1),
        "shard_header_bytes": ck.header_bytes, "index_and_config_bytes": ck.small_file_bytes,
        "gain_bytes": ck.gain_bytes, "budget_bytes": int(budget),
        "client_bytes_read": client_bytes, "server_bytes_served": served,
        "ratio_to_metadata_plus_gains": round(fetched / (metadata + ck.gain_bytes), 4),
        "http_requests": requests, "audit_wall_s": round(wall, 2),
        "generate_s": round(t_gen, 2), "gains_missing": missing[:5],
        "worst_ratio_error": worst,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", help="where to write the sparse checkpoint (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the files afterwards")
    args = ap.parse_args(argv)
    root = args.dir or tempfile.mkdtemp(prefix="ckpt-audit-bench-")
    os.makedirs(root, exist_ok=True)
    try:
        result = run(root)
    finally:
        if not args.keep:
            shutil.rmtree(os.path.join(root, "dsv3"), ignore_errors=True)
            if not args.dir:
                shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
