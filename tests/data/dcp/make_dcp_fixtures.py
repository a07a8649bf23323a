"""Write ``tests/data/dcp/sharded2/``: a Distributed Checkpoint saved by two ranks.

    PYTHONPATH=. python tests/data/dcp/make_dcp_fixtures.py

Two gloo processes shard every tensor along dim 0 as FSDP2/torchtitan do (``DTensor`` with
``Shard(0)`` on a 1-D CPU mesh) and call ``torch.distributed.checkpoint.save``, so each gain is
stored as two chunks in two ``__R_0.distcp`` files. Names and nesting follow torchtitan (model
tensors at the top level, ``optimizer`` and ``train_state`` beside them). The same full weights
go to ``reference.safetensors``. Values come from a fixed seed (see :func:`full_state`), so the
test can also rebuild them. Committed because spawning two ranks takes ~15 s.
"""

from __future__ import annotations

import io
import os
import shutil
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "sharded2")


def full_state() -> dict[str, torch.Tensor]:
    """The model weights (bf16), torchtitan names: ``layers.N.attention_norm`` etc."""
    g = torch.Generator().manual_seed(0)
    out: dict[str, torch.Tensor] = {"tok_embeddings.weight": torch.randn(32, 64, generator=g)}
    for i in range(2):
        out[f"layers.{i}.attention_norm.weight"] = 1 + (0.1 + 0.1 * i) * torch.randn(64,
                                                                                       generator=g)
        out[f"layers.{i}.ffn_norm.weight"] = 0.6 + 0.05 * torch.randn(64, generator=g)
        out[f"layers.{i}.feed_forward.w1.weight"] = torch.randn(96, 64, generator=g)
    out["norm.weight"] = 1.7 + 0.2 * torch.randn(64, generator=g)
    out["output.weight"] = torch.randn(32, 64, generator=g)
    return {k: v.to(torch.bfloat16) for k, v in out.items()}


def _worker(rank: int, port: int) -> None:
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    mesh = init_device_mesh("cpu", (2,))
    model = {k: distribute_tensor(v, mesh, [Shard(0)]) for k, v in full_state().items()}
    optim = {"state": {"norm.weight": {"exp_avg": distribute_tensor(torch.zeros(64), mesh,
                                                                    [Shard(0)])}}}
    state = {**model, "optimizer": optim, "train_state": io.BytesIO(b"step=5")}
    dcp.save(state, checkpoint_id=OUT)
    dist.destroy_process_group()


def main() -> None:
    import torch.multiprocessing as mp
    from safetensors.torch import save_file

    shutil.rmtree(OUT, ignore_errors=True)
    mp.spawn(_worker, args=(29577,), nprocs=2)
    save_file(full_state(), os.path.join(HERE, "reference.safetensors"))
    print("wrote", OUT, file=sys.stderr)


if __name__ == "__main__":
    main()
