"""Data-parallel training (torch.distributed, gloo): `oodgen run --distributed 2` (torchrun with two
local processes) trains a smoke run, rank 0 writes a valid metrics.json and detector, a rerun
resumes from the checkpoints; and the batch / pool sharding that keeps one process unchanged."""
from __future__ import annotations

import json
import subprocess
import sys

import torch

from oodgen.cli import _without_distributed
from oodgen.distributed import Dist, torchrun_argv
from oodgen.score import load_detector
from oodgen.train import load_checkpoint


def test_batch_shards_partition_the_batch_and_one_process_keeps_it():
    idx = torch.arange(37)
    parts = [Dist(r, 3).shard(idx) for r in range(3)]
    assert sorted(torch.cat(parts).tolist()) == idx.tolist()
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
    assert torch.equal(Dist().shard(idx), idx)
    # a last batch smaller than the job: every rank takes all of it (DDP needs a step on every rank)
    assert torch.equal(Dist(1, 4).shard(idx[:3]), idx[:3])


def test_distributed_flag_is_dropped_from_the_relaunched_command():
    argv = ["run", "--id", "mnist", "--distributed", "2", "--out", "x", "--distributed=3"]
    assert _without_distributed(argv) == ["run", "--id", "mnist", "--out", "x"]
    cmd = torchrun_argv(2, ["run", "--id", "mnist"])
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and "--nproc-per-node=2" in cmd
    assert cmd[-4:] == ["oodgen", "run", "--id", "mnist"]


def _run(out, *extra):
    return subprocess.run([sys.executable, "-m", "oodgen", "run", "--id", "mnist", "--profile", "smoke",
                           "--seed", "0", "--out", str(out), "--no-progress", "--distributed", "2", *extra],
                          capture_output=True, text=True, timeout=300)


def test_torchrun_two_processes_train_a_valid_run_and_resume(tmp_path):
    out = tmp_path / "ddp"
    res = _run(out)
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert set(m["ood"]) >= {"fmnist", "notmnist", "omniglot", "kmnist", "gaussian", "uniform", "sphere"}
    assert all(0.0 <= v["auroc"] <= 100.0 for v in m["ood"].values())
    assert m["accuracy"] > 20.0                      # 10 classes, one smoke epoch: well above chance
    assert "cvae_health" in m and m["cvae_health"]["latent_dim"] == 8
    for name in ("cvae", "nplus1", "plain"):
        assert load_checkpoint(out / "checkpoints" / f"{name}.pt")["epoch"] == 1
    # only rank 0 logged: the run's header line appears once
    assert res.stdout.count("oodgen run: id=mnist") == 1, res.stdout[:2000]
    det = load_detector(out)
    assert det.score(torch.rand(4, 1, 28, 28)).shape == (4,)
    # a rerun finds every stage finished: it resumes, trains nothing, and writes the same results
    again = _run(out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "epoch 1/1 loss" not in again.stdout
    m2 = json.loads((out / "metrics.json").read_text())
    assert {k: v["auroc"] for k, v in m2["ood"].items()} == {k: v["auroc"] for k, v in m["ood"].items()}
