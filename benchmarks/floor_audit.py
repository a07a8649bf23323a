"""The floor of an audit process: what any header+gain reader pays, and nothing else.

``python benchmarks/floor_audit.py DIR`` reads the index of a sharded safetensors folder, then for
each shard ``json.loads`` its header and ``os.pread``s each norm gain into a float32 numpy array
(BF16 widened), and prints one JSON line (gains read, their sum of squares). No statistics, no
policy, no report: ``bench_audit.py`` runs this beside ``ckpt-audit audit DIR --format json`` as
whole processes and prints the ratio.
"""

from __future__ import annotations

import json
import os
import struct
import sys

import numpy as np


def read_all(root: str) -> tuple[int, float]:
    """Every gain of the folder read into numpy: (gains read, their sum of squares)."""
    with open(os.path.join(root, "model.safetensors.index.json"), "rb") as fh:
        shards = sorted(set(json.loads(fh.read())["weight_map"].values()))
    gains, total = 0, 0.0
    for shard in shards:
        fd = os.open(os.path.join(root, shard), os.O_RDONLY)
        try:
            (n,) = struct.unpack("<Q", os.pread(fd, 8, 0))
            header = json.loads(os.pread(fd, n, 8))
            for name, e in header.items():
                if name.endswith("norm.weight"):
                    b, end = e["data_offsets"]
                    raw = np.frombuffer(os.pread(fd, end - b, 8 + n + b), dtype=np.uint16)
                    g = (raw.astype(np.uint32) << 16).view(np.float32)
                    total += float(np.dot(g, g))
                    gains += 1
        finally:
            os.close(fd)
    return gains, total


if __name__ == "__main__":
    n_gains, sum_sq = read_all(sys.argv[1])
    sys.stdout.write(json.dumps({"gains": n_gains, "sum_sq": sum_sq}) + "\n")
