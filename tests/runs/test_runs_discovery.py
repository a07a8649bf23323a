"""Run discovery and completeness on run folders written by real writers (save_pretrained,
torch.save in Megatron/DeepSpeed layouts, torch.distributed.checkpoint for step-N)."""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

from ckpt_audit.errors import DetectionError
from ckpt_audit.runs.discovery import FileEntry, assess, discover_run, parse_name


def _problems(run, name):
    return next(c for c in run.checkpoints if c.name == name).problems


def test_parse_name_layouts():
    assert parse_name("checkpoint-500") == ("hf-trainer", 500)
    assert parse_name("tmp-checkpoint-7") == ("hf-trainer-tmp", 7)
    assert parse_name("iter_0001000") == ("megatron", 1000)
    assert parse_name("global_step42") == ("deepspeed", 42)
    assert parse_name("step-3") == ("step", 3)
    assert parse_name("step_30") == ("step", 30)
    assert parse_name("step_30.pt") == ("step", 30)
    assert parse_name("epoch=1-step=250.ckpt") == ("lightning", 250)
    for other in ("runs", "checkpoint-best", "iter_", "logs", "latest", "stepper-3"):
        assert parse_name(other) is None


def test_complete_run_is_ordered_numerically(llama_run):
    shutil.copytree(os.path.join(llama_run, "checkpoint-400"),
                    os.path.join(llama_run, "checkpoint-1000"))
    shutil.copytree(os.path.join(llama_run, "checkpoint-0"),
                    os.path.join(llama_run, "checkpoint-50"))
    os.makedirs(os.path.join(llama_run, "runs"))  # TensorBoard folder: not a checkpoint
    run = discover_run(llama_run)
    assert [c.step for c in run.checkpoints] == [0, 50, 100, 200, 300, 400, 1000]
    assert all(c.complete and not c.problems for c in run.checkpoints), run.checkpoints
    assert {c.layout for c in run.checkpoints} == {"hf-trainer"}


def test_missing_shard_and_index_naming_absent_file(llama_run):
    os.remove(os.path.join(llama_run, "checkpoint-200", "model-00002-of-00003.safetensors"))
    run = discover_run(llama_run)
    probs = _problems(run, "checkpoint-200")
    assert any("shard model-00002-of-00003.safetensors is missing" in p for p in probs)
    assert any("model.safetensors.index.json names model-00002-of-00003.safetensors" in p
               for p in probs)
    assert [c.name for c in run.incomplete] == ["checkpoint-200"]


def test_truncated_shard_partial_file_and_empty(llama_run):
    shard = os.path.join(llama_run, "checkpoint-300", "model-00001-of-00003.safetensors")
    size = os.path.getsize(shard)
    with open(shard, "r+b") as fh:
        fh.truncate(size // 2)
    with open(os.path.join(llama_run, "checkpoint-100", "model.safetensors.tmp"), "wb") as fh:
        fh.write(b"\0" * 10)
    os.makedirs(os.path.join(llama_run, "checkpoint-500"))
    os.makedirs(os.path.join(llama_run, "tmp-checkpoint-600"))
    shutil.copy(os.path.join(llama_run, "checkpoint-0", "config.json"),
                os.path.join(llama_run, "tmp-checkpoint-600", "config.json"))
    run = discover_run(llama_run)
    trunc = _problems(run, "checkpoint-300")
    assert any(f"file has {size // 2}" in p and "truncated" in p for p in trunc), trunc
    assert any("partial file" in p for p in _problems(run, "checkpoint-100"))
    assert "no files" in _problems(run, "checkpoint-500")
    assert any("tmp-checkpoint" in p for p in _problems(run, "tmp-checkpoint-600"))
    assert {c.name for c in run.incomplete} == {
        "checkpoint-100", "checkpoint-300", "checkpoint-500", "tmp-checkpoint-600"}
    assert {c.name for c in run.complete} == {"checkpoint-0", "checkpoint-200", "checkpoint-400"}


def test_trainer_still_writing(llama_run):
    import torch

    ck = os.path.join(llama_run, "checkpoint-400")
    torch.save({"lr": 1e-3}, os.path.join(ck, "training_args.bin"))
    os.remove(os.path.join(ck, "trainer_state.json"))
    run = discover_run(llama_run)
    assert any("trainer_state.json" in p for p in _problems(run, "checkpoint-400"))


def test_size_changing_between_two_stats(llama_run):
    target = os.path.join(llama_run, "checkpoint-400", "optimizer.pt")
    stop = threading.Event()

    def writer():
        with open(target, "ab") as fh:
            while not stop.is_set():
                fh.write(b"x" * 4096)
                fh.flush()
                time.sleep(0.02)

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.05)
        run = discover_run(llama_run, settle=0.3)
    finally:
        stop.set()
        t.join()
    probs = _problems(run, "checkpoint-400")
    assert any("optimizer.pt: changed while being examined" in p for p in probs), probs
    assert [c.name for c in run.incomplete] == ["checkpoint-400"]
    os.remove(target)
    assert discover_run(llama_run, settle=0.1).incomplete == ()


def test_megatron_and_deepspeed_layouts_written_by_torch_save(tmp_path):
    import torch

    state = {"model": {"decoder.final_layernorm.weight": torch.ones(8)}, "iteration": 0}
    mega = tmp_path / "mega"
    for it, ranks in ((100, ("mp_rank_00", "mp_rank_01")), (200, ("mp_rank_00", "mp_rank_01")),
                      (300, ("mp_rank_00",))):
        for r in ranks:
            d = mega / f"iter_{it:07d}" / r
            d.mkdir(parents=True)
            torch.save(state, d / "model_optim_rng.pt")
    os.remove(mega / "iter_0000200" / "mp_rank_01" / "model_optim_rng.pt")
    (mega / "latest_checkpointed_iteration.txt").write_text("200")
    # a rank file cut short while being written: the zip end record is missing
    rank0 = mega / "iter_0000100" / "mp_rank_00" / "model_optim_rng.pt"
    run = discover_run(str(mega))
    assert [c.step for c in run.checkpoints] == [100, 200, 300]
    assert run.checkpoints[0].complete
    assert any("mp_rank_01/ has no model_optim_rng.pt" in p for p in _problems(run, "iter_0000200"))
    assert any("newer than the tracker" in p for p in _problems(run, "iter_0000300"))
    data = rank0.read_bytes()
    rank0.write_bytes(data[: len(data) - 100])
    assert any("zip end record missing" in p
               for p in _problems(discover_run(str(mega)), "iter_0000100"))

    ds = tmp_path / "ds"
    (ds / "global_step10").mkdir(parents=True)
    torch.save({"module": {"ln_f.weight": torch.ones(8)}},
               ds / "global_step10" / "mp_rank_00_model_states.pt")
    (ds / "global_step20").mkdir()
    torch.save({"state": 1}, ds / "global_step20" / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    (ds / "latest").write_text("global_step20")
    run = discover_run(str(ds))
    assert [c.layout for c in run.checkpoints] == ["deepspeed", "deepspeed"]
    assert run.checkpoints[0].complete
    assert any("model_states.pt" in p for p in _problems(run, "global_step20"))


def test_step_folders_written_by_torch_distributed_checkpoint(tmp_path):
    import torch
    import torch.distributed.checkpoint as dcp

    for step in (5, 10):
        dcp.save({"model.norm.weight": torch.ones(16)},
                 checkpoint_id=str(tmp_path / f"step-{step}"))
    assert all(c.complete for c in discover_run(str(tmp_path)).checkpoints)
    os.remove(tmp_path / "step-10" / ".metadata")
    run = discover_run(str(tmp_path))
    assert [c.complete for c in run.checkpoints] == [True, False]
    assert any(".metadata" in p for p in run.checkpoints[1].problems)


def test_not_a_run(tmp_path, llama_run):
    with pytest.raises(DetectionError, match="no checkpoints in this run folder"):
        discover_run(str(tmp_path / "nothing-here").replace("nothing-here", ""))
    with pytest.raises(DetectionError, match="not a run folder"):
        discover_run(os.path.join(llama_run, "checkpoint-0", "config.json"))


def test_assess_is_pure_and_needs_weights():
    entries = (FileEntry("config.json", 10, 0),)
    assert any("no weight files" in p for p in assess("hf-trainer", entries))
    ok = (FileEntry("model.safetensors", 100, 0, declared_size=100),)
    assert assess("step", ok) == ()
    assert assess("step", ok) == assess("step", ok)


@pytest.mark.parametrize("text", ["٣", "1" * 300, "global_step٣", "12 13"])
def test_a_tracker_that_is_not_one_ascii_number_is_not_read(tmp_path, text: str) -> None:
    """Non-ASCII digits (int() reads "٣" as 3) and a number past the 256 bytes a tracker is read
    to (it was cut there and read as its first 256 digits) name no step."""
    from ckpt_audit.runs.discovery import read_trackers

    (tmp_path / "latest_checkpointed_iteration.txt").write_text(text, encoding="utf-8")
    assert read_trackers(str(tmp_path)) == {}
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("20")
    assert read_trackers(str(tmp_path)) == {"megatron": 20}
