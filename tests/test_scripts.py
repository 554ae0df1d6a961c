"""scripts/run_results.sh, the documented way to produce the committed ``full`` runs: the ``oodgen run``
commands it issues (with a stand-in ``oodgen`` on PATH) and that they match the committed runs' configs."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from oodgen.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "run_results.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _issued(tmp_path: Path, **env: str) -> list[list[str]]:
    """Run a copy of the script in ``tmp_path`` (its results/ folder there); return the argv of each
    ``oodgen`` call."""
    (tmp_path / "scripts").mkdir(exist_ok=True)
    shutil.copy(SCRIPT, tmp_path / "scripts" / SCRIPT.name)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "oodgen"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$*" >> "$OODGEN_CALLS"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.txt"
    calls.write_text("")
    subprocess.run(["bash", str(tmp_path / "scripts" / SCRIPT.name)], check=True, timeout=60,
                   env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                        "OODGEN_CALLS": str(calls), **env})
    return [line.split() for line in calls.read_text().splitlines()]


def test_runs_every_missing_seed_and_skips_finished_ones(tmp_path):
    done = tmp_path / "results" / "mnist" / "oodgen" / "seed0"
    done.mkdir(parents=True)
    (done / "metrics.json").write_text("{}")
    calls = _issued(tmp_path, IDS="mnist fmnist0-4", SEEDS="0 1")
    outs = [c[c.index("--out") + 1] for c in calls]
    assert outs == ["results/mnist/oodgen/seed1", "results/fmnist0-4/oodgen/seed0", "results/fmnist0-4/oodgen/seed1"]
    assert all(c[0] == "run" and c[c.index("--profile") + 1] == "full" for c in calls)


def test_reevaluate_only_runs_with_checkpoints(tmp_path):
    for seed, ckpt in ((0, True), (1, False)):
        run = tmp_path / "results" / "mnist" / "oodgen" / f"seed{seed}"
        (run / "checkpoints").mkdir(parents=True)
        (run / "metrics.json").write_text("{}")
        if ckpt:
            (run / "checkpoints" / "nplus1.pt").write_bytes(b"")
    calls = _issued(tmp_path, IDS="mnist", SEEDS="0 1", REEVALUATE="1")
    assert [c[c.index("--out") + 1] for c in calls] == ["results/mnist/oodgen/seed0"]


@pytest.mark.parametrize("setting", ["mnist", "fmnist", "mnist0-4", "fmnist0-4"])
def test_its_commands_reproduce_the_committed_configs(tmp_path, setting):
    (argv,) = _issued(tmp_path, IDS=setting, SEEDS="0")
    a = build_parser().parse_args(argv)
    committed = json.loads((REPO / "results" / setting / "oodgen" / "seed0" / "config.json").read_text())
    variant = committed["variant"]
    assert (a.id, a.profile, a.seed) == (committed["id"], committed["profile"], committed["seed"])
    assert (a.beta, a.clip_type1, a.encoder_act, a.kl_warmup) == (
        variant["beta"], variant["clip_type1"], variant["encoder_act"], variant["kl_warmup"])
    assert (a.nullspace, a.type2_radius, a.sphere_radius, a.z == "sampled") == (
        variant["nullspace"], variant["type2_radius"], variant["sphere_radius"], variant["sample_z"])
