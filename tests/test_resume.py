"""A run killed with SIGKILL and started again ends exactly where an uninterrupted run ends.

The runs are real ``oodgen.run.run`` calls in subprocesses, on a profile derived from
``smoke`` with two epochs in the CVAE and n+1 stages (so a kill can land mid-stage).
Five training processes in all (about a minute on 2 cores); part of the default run, so CI
exercises the kill-and-resume path on every submission.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = r"""
import dataclasses, sys
import torch
torch.set_num_threads(1)
from oodgen import config
from oodgen.run import run
base = config.PROFILES["smoke"]
config.PROFILES["resume-test"] = dataclasses.replace(
    base, name="resume-test", n_train=360, n_eval=100, eval_batch=100,
    cvae=dataclasses.replace(base.cvae, epochs=2), classifier=dataclasses.replace(base.classifier, epochs=2))
run(config.RunConfig(id="mnist", profile="resume-test", seed=int(sys.argv[2])), sys.argv[1], progress=False)
"""
TIMEOUT_S = 240


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _start(out: Path, seed: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), str(seed)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _run_to_end(out: Path, seed: int = 3) -> tuple[dict, str]:
    proc = _start(out, seed)
    try:
        log, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 0, log
    return json.loads((out / "metrics.json").read_text()), log


def _kill_when(out: Path, ready, seed: int = 3) -> str:
    """Start a run and SIGKILL it as soon as ``ready()`` holds; returns its output."""
    proc = _start(out, seed)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail("the run ended before it could be killed:\n" + proc.stdout.read())
            if time.monotonic() > deadline:
                pytest.fail("timed out waiting for the kill point")
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        log, _ = proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    return log


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run, seed 3."""
    return _run_to_end(tmp_path_factory.mktemp("reference"))[0]


def test_killed_run_resumes_to_identical_metrics(tmp_path, reference):
    out = tmp_path / "killed"
    ckpt = out / "checkpoints"
    _kill_when(out, lambda: (ckpt / "cvae.pt").exists())
    assert not (ckpt / "nplus1.pt").exists() and not (out / "metrics.json").exists()
    _kill_when(out, lambda: (ckpt / "nplus1.pt").exists())
    assert not (out / "metrics.json").exists()
    metrics, log = _run_to_end(out)
    # The last start must have resumed the n+1 stage after its first epoch, not retrained it.
    assert "[nplus1] resuming after epoch 1/2" in log, log
    assert "[cvae] epoch" not in log, log
    assert metrics["ood"] == reference["ood"]
    assert metrics["accuracy"] == reference["accuracy"]
    assert metrics["threshold_95tpr"] == reference["threshold_95tpr"]


def test_same_seed_same_metrics(tmp_path, reference):
    metrics, _ = _run_to_end(tmp_path / "again")
    for key in ("ood_by_score", "accuracy", "accuracy_plain", "threshold_95tpr", "sphere_radius"):
        assert metrics[key] == reference[key], key
