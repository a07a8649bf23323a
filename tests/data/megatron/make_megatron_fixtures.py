"""Write the Megatron test checkpoints under tests/data/megatron/ with megatron-core itself.

Run once (CI does not need megatron-core; the small outputs are committed):

    python3 -m venv /work/venv-megatron
    /work/venv-megatron/bin/pip install torch==2.13.0 megatron-core==0.16.1 psutil safetensors numpy
    /work/venv-megatron/bin/python tests/data/megatron/make_megatron_fixtures.py

What it builds: a tiny megatron-core ``GPTModel`` (hidden 64, 4 layers, GQA, RMSNorm, RoPE,
``mtp_num_layers=1``, local non-Transformer-Engine specs, bf16) under a gloo process group of one
on CPU. Its norm gains are set to distinct deterministic values (so a mixed-up layer number or
rank is visible in the figures). Then it writes:

- ``reference.safetensors``: the same weights (tensor-parallel size 1), for comparison;
- ``legacy_tp1/``: Megatron-LM's legacy layout: ``latest_checkpointed_iteration.txt`` and
  ``iter_0000010/mp_rank_00/model_optim_rng.pt`` holding ``args`` (an ``argparse.Namespace``
  with Megatron enums inside), ``checkpoint_version``, ``iteration``, ``model``, ``rng_state``
  (Python/numpy/torch RNG states, as Megatron-LM's ``get_rng_state``);
- ``legacy_tp2_te/``: tensor-parallel size 2, split the way Megatron shards it (each parameter's
  own ``partition_dim`` attribute set by megatron-core), with the state-dict names Transformer
  Engine layers use (norms fused into ``linear_qkv.layer_norm_weight`` /
  ``linear_fc1.layer_norm_weight``, ``_extra_state`` as ``io.BytesIO``);
- ``legacy_tp2_mismatch/``: tensor-parallel size 2 where rank 1's copy of one replicated gain
  differs in one element (the bug class the reader must catch);
- ``legacy_pp2_vp2/``: pipeline size 2 with 2 virtual stages: ``mp_rank_00_000`` and
  ``mp_rank_00_001``, each with ``model0``/``model1`` holding stage-local layer numbers;
- ``torch_dist/``: ``dist_checkpointing.save`` of ``GPTModel.sharded_state_dict()`` in
  ``iter_0000010/`` (plus the tracker file), with ``args``/``iteration`` in ``common.pt`` as
  Megatron-LM saves them.

megatron-core calls ``torch.cuda.synchronize``/``current_device`` directly while saving; those two
are stubbed for CPU below. Everything else is the library's own code.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ITERATION = 10
HIDDEN = 64
LAYERS = 4
SEED = 1234


def _stub_cuda() -> None:
    torch.cuda.synchronize = lambda *a, **k: None  # type: ignore[assignment]
    torch.cuda.current_device = lambda: "cpu"  # type: ignore[assignment]


def _build_model():  # noqa: ANN202 - megatron types
    from megatron.core import parallel_state
    from megatron.core.models.gpt.gpt_layer_specs import (
        get_gpt_layer_local_spec,
        get_gpt_mtp_block_spec,
    )
    from megatron.core.models.gpt.gpt_model import GPTModel
    from megatron.core.transformer.transformer_config import TransformerConfig

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    parallel_state.initialize_model_parallel(1, 1)
    torch.manual_seed(SEED)
    cfg = TransformerConfig(
        num_layers=LAYERS, hidden_size=HIDDEN, num_attention_heads=4, num_query_groups=2,
        ffn_hidden_size=96, use_cpu_initialization=True, normalization="RMSNorm",
        mtp_num_layers=1, params_dtype=torch.bfloat16, bf16=True, add_bias_linear=False,
    )
    spec = get_gpt_layer_local_spec(normalization="RMSNorm")
    mtp = get_gpt_mtp_block_spec(cfg, spec, use_transformer_engine=False)
    model = GPTModel(config=cfg, transformer_layer_spec=spec, vocab_size=64,
                     max_sequence_length=32, position_embedding_type="rope",
                     mtp_block_spec=mtp)
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for i, (name, p) in enumerate(sorted(model.named_parameters())):
            if "norm" in name and p.dim() == 1:
                # distinct per tensor: scale drifts with i so a layer mix-up changes figures
                p.copy_(1.0 + (0.05 + 0.03 * i) * torch.randn(p.shape, generator=gen))
    return model, cfg


def _args(cfg, tp: int = 1, pp: int = 1, vp: int | None = None) -> argparse.Namespace:  # noqa: ANN001
    from megatron.core.enums import ModelType
    from megatron.core.transformer.enums import AttnBackend

    return argparse.Namespace(
        num_layers=cfg.num_layers, hidden_size=cfg.hidden_size, ffn_hidden_size=cfg.ffn_hidden_size,
        num_attention_heads=cfg.num_attention_heads, num_query_groups=cfg.num_query_groups,
        group_query_attention=True, normalization="RMSNorm", apply_layernorm_1p=False,
        mtp_num_layers=1, mtp_loss_scaling_factor=0.1, padded_vocab_size=64,
        max_position_embeddings=32, position_embedding_type="rope",
        tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
        virtual_pipeline_model_parallel_size=vp, params_dtype=torch.bfloat16, bf16=True,
        ckpt_format="torch", transformer_impl="local", model_type=ModelType.encoder_or_decoder,
        attention_backend=AttnBackend.auto, iteration=ITERATION, seed=SEED,
    )


def _rng_state() -> list[dict]:
    """What Megatron-LM's ``get_rng_state`` saves (no CUDA here)."""
    return [{
        "random_rng_state": random.getstate(),
        "np_rng_state": np.random.get_state(),
        "torch_rng_state": torch.get_rng_state(),
        "rng_tracker_states": {},
    }]


def _save_legacy(root: str, files: dict[str, dict], args: argparse.Namespace) -> None:
    """``files``: rank folder name -> {"model" or "model0"...: state dict}."""
    shutil.rmtree(root, ignore_errors=True)
    iter_dir = os.path.join(root, f"iter_{ITERATION:07d}")
    for rank_dir, models in files.items():
        os.makedirs(os.path.join(iter_dir, rank_dir))
        state = {"args": args, "checkpoint_version": 3.0, "iteration": ITERATION,
                 **models, "rng_state": _rng_state(),
                 "num_floating_point_operations_so_far": 0}
        torch.save(state, os.path.join(iter_dir, rank_dir, "model_optim_rng.pt"))
    with open(os.path.join(root, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write(str(ITERATION))


def _tp_split(model, sd: dict, tp: int) -> list[dict]:  # noqa: ANN001
    """Split a TP=1 state dict into ``tp`` rank state dicts by each parameter's partition_dim."""
    params = dict(model.named_parameters())
    out: list[dict] = [{} for _ in range(tp)]
    for name, val in sd.items():
        p = params.get(name)
        if isinstance(val, torch.Tensor) and p is not None and getattr(
            p, "tensor_model_parallel", False
        ):
            for r, piece in enumerate(torch.chunk(val, tp, dim=p.partition_dim)):
                out[r][name] = piece.clone()
        else:
            for r in range(tp):
                out[r][name] = val.clone() if isinstance(val, torch.Tensor) else val
    return out


def _te_names(sd: dict) -> dict:
    """Rename to Transformer Engine's fused-norm names; TE keeps ``_extra_state`` as BytesIO."""
    out: dict = {}
    for name, val in sd.items():
        name = name.replace("input_layernorm.weight", "self_attention.linear_qkv.layer_norm_weight")
        name = name.replace("pre_mlp_layernorm.weight", "mlp.linear_fc1.layer_norm_weight")
        if name.endswith("._extra_state"):
            val = io.BytesIO()
        out[name] = val
    return out


def _pp_vp_split(sd: dict, pp: int, vp: int) -> dict[str, dict]:
    """Interleaved pipeline: chunk c = v*pp + p holds global layers [c*k, (c+1)*k), renumbered."""
    per_chunk = LAYERS // (pp * vp)
    files: dict[str, dict] = {f"mp_rank_00_{p:03d}": {} for p in range(pp)}
    for p in range(pp):
        for v in range(vp):
            chunk = v * pp + p
            lo = chunk * per_chunk
            first, last = chunk == 0, chunk == pp * vp - 1
            part: dict = {}
            for name, val in sd.items():
                if name.startswith("decoder.layers."):
                    rest = name[len("decoder.layers."):]
                    idx, tail = rest.split(".", 1)
                    if lo <= int(idx) < lo + per_chunk:
                        part[f"decoder.layers.{int(idx) - lo}.{tail}"] = val
                elif name.startswith("embedding."):
                    if first or last:  # MTP needs the embedding on the last stage too
                        part[name] = val
                elif last:
                    part[name] = val
            files[f"mp_rank_00_{p:03d}"][f"model{v}"] = part
    return files


def _save_torch_dist(model, args: argparse.Namespace) -> None:  # noqa: ANN001
    from megatron.core import dist_checkpointing

    root = os.path.join(HERE, "torch_dist")
    shutil.rmtree(root, ignore_errors=True)
    iter_dir = os.path.join(root, f"iter_{ITERATION:07d}")
    os.makedirs(iter_dir)
    state = {"model": model.sharded_state_dict(prefix=""), "args": args,
             "checkpoint_version": 3.0, "iteration": ITERATION}
    dist_checkpointing.save(state, iter_dir)
    with open(os.path.join(root, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write(str(ITERATION))


def main() -> None:
    _stub_cuda()
    from safetensors.torch import save_file

    model, cfg = _build_model()
    sd = model.state_dict()
    tensors = {k: v.contiguous() for k, v in sd.items() if isinstance(v, torch.Tensor)}
    save_file(tensors, os.path.join(HERE, "reference.safetensors"))

    _save_legacy(os.path.join(HERE, "legacy_tp1"), {"mp_rank_00": {"model": sd}}, _args(cfg))

    ranks = _tp_split(model, sd, 2)
    _save_legacy(os.path.join(HERE, "legacy_tp2_te"),
                 {f"mp_rank_{r:02d}": {"model": _te_names(s)} for r, s in enumerate(ranks)},
                 _args(cfg, tp=2))

    bad = _tp_split(model, sd, 2)
    gain = bad[1]["decoder.layers.2.pre_mlp_layernorm.weight"]
    gain[5] = gain[5] * 1.5  # rank 1's replica drifts in one channel
    _save_legacy(os.path.join(HERE, "legacy_tp2_mismatch"),
                 {f"mp_rank_{r:02d}": {"model": s} for r, s in enumerate(bad)}, _args(cfg, tp=2))

    _save_legacy(os.path.join(HERE, "legacy_pp2_vp2"), _pp_vp_split(sd, 2, 2),
                 _args(cfg, pp=2, vp=2))

    _save_torch_dist(model, _args(cfg))
    torch.distributed.destroy_process_group()
    print("wrote fixtures under", HERE, file=sys.stderr)


if __name__ == "__main__":
    main()
