"""Write the DeepSpeed test checkpoints under tests/data/deepspeed/ with DeepSpeed itself.

Run once (CI does not need DeepSpeed; the small outputs are committed):

    python3 -m venv /work/venv-ds
    DS_BUILD_OPS=0 /work/venv-ds/bin/pip install torch==2.13.0 deepspeed==0.19.8 safetensors numpy
    /work/venv-ds/bin/python tests/data/deepspeed/make_deepspeed_fixtures.py

A tiny Llama-shaped module (HF names: ``model.layers.N.input_layernorm.weight``, ``model.norm``,
RMSNorm gains set to distinct deterministic values) is wrapped by ``deepspeed.initialize`` on
CPU (``DS_ACCELERATOR=cpu``, gloo, world size 1) and saved with ``engine.save_checkpoint`` at
ZeRO stages 0, 2 and 3 (``zero0/``, ``zero2/``, ``zero3/``: ``latest`` + ``global_step5/``).
``zero3_dp2/`` is ZeRO-3 over two data-parallel ranks (two gloo processes), so every parameter
is split in two partitions, one per rank's ``*_optim_states.pt``; one gain there is frozen
(``requires_grad=False``), which ZeRO-3 keeps as per-rank fragments in the model-states files.
``reference.safetensors`` holds the same weights. DeepSpeed also drops ``zero_to_fp32.py``
into ZeRO-2/3 folders; it is removed here to keep the fixtures small (the reader's message
names it either way).
"""

from __future__ import annotations

import os
import shutil

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
HIDDEN = 32


class RMSNorm(torch.nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class Layer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(HIDDEN)
        self.mlp = torch.nn.Linear(HIDDEN, HIDDEN, bias=False)
        self.post_attention_layernorm = RMSNorm(HIDDEN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.post_attention_layernorm(self.input_layernorm(x)))


class Inner(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(32, HIDDEN)
        self.layers = torch.nn.ModuleList([Layer() for _ in range(2)])
        self.norm = RMSNorm(HIDDEN)


class TinyLlama(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = Inner()
        self.lm_head = torch.nn.Linear(HIDDEN, 32, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            h = layer(h)
        return self.lm_head(self.model.norm(h))


def _model() -> TinyLlama:
    torch.manual_seed(7)
    m = TinyLlama()
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for i, (name, p) in enumerate(sorted(m.named_parameters())):
            if "norm" in name:
                p.copy_(1.0 + (0.1 + 0.05 * i) * torch.randn(p.shape, generator=gen))
    return m


def _dp2_worker(rank: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29543", RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_RANK=str(rank), DS_ACCELERATOR="cpu")
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")
    model = _model()
    model.model.layers[1].input_layernorm.weight.requires_grad_(False)
    cfg = {"train_batch_size": 2, "zero_optimization": {"stage": 3},
           "optimizer": {"type": "Adam", "params": {"lr": 1e-3, "torch_adam": True}}}
    params = [p for p in model.parameters() if p.requires_grad]
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=params, config=cfg)
    out = os.path.join(HERE, "zero3_dp2")
    engine.save_checkpoint(out, tag="global_step5")
    if rank == 0:
        for script in ("zero_to_fp32.py", "zero_to_torch.py"):
            if os.path.exists(os.path.join(out, script)):
                os.remove(os.path.join(out, script))


def main() -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29541", RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK="0", DS_ACCELERATOR="cpu")
    import deepspeed
    from safetensors.torch import save_file

    deepspeed.init_distributed(dist_backend="gloo")
    save_file({k: v.contiguous() for k, v in _model().state_dict().items()},
              os.path.join(HERE, "reference.safetensors"))
    for stage in (0, 2, 3):
        model = _model()
        cfg = {"train_batch_size": 1, "zero_optimization": {"stage": stage},
               "optimizer": {"type": "Adam", "params": {"lr": 1e-3, "torch_adam": True}}}
        engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                               config=cfg)
        out = os.path.join(HERE, f"zero{stage}")
        shutil.rmtree(out, ignore_errors=True)
        engine.save_checkpoint(out, tag="global_step5")
        for script in ("zero_to_fp32.py", "zero_to_torch.py"):
            if os.path.exists(os.path.join(out, script)):
                os.remove(os.path.join(out, script))
        engine.destroy()
    import torch.multiprocessing as mp

    shutil.rmtree(os.path.join(HERE, "zero3_dp2"), ignore_errors=True)
    mp.spawn(_dp2_worker, nprocs=2)


if __name__ == "__main__":
    main()
