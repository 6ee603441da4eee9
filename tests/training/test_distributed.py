"""Data-parallel training under torchrun with 2 gloo processes on the CPU.

* equivalence: the global batch split over 2 ranks gives the loss trajectory and final parameters
  of one process with the same batch (to float tolerance; bit for bit against one process that
  takes the batch as the same two micro-batches, since the ranks' gradients are summed the same way);
* kill -9 of the whole torchrun group, then resume under torchrun: bit-identical to the
  uninterrupted 2-process run; resuming the same checkpoint in one process continues the same
  random streams (equal to float tolerance).
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fsdiff._paths import REPO_ROOT

STEPS = 30
SETS = ["grid.shape=[16,16]", "model.modes=7", "model.channels=[8,8,16]", "model.stats_samples=64",
        f"training.steps={STEPS}", "training.batch_size=8", "training.n_val=8", "training.eval_every=10",
        "training.checkpoint_every=5", "training.keep_checkpoints=10", "training.warmup_steps=0",
        "multilevel.levels=[8,16]", 'multilevel.schedule="random"', "multilevel.probabilities=[0.5,0.5]",
        "multilevel.fractions=[]", "training.data_shards=2"]
TORCHRUN = Path(sys.executable).with_name("torchrun")

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not TORCHRUN.exists(),
                                reason="needs torch.distributed and torchrun")


def _command(run_dir: Path, procs: int, *extra: str) -> list[str]:
    head = ([str(TORCHRUN), "--standalone", f"--nproc-per-node={procs}", "-m", "fsdiff"] if procs > 1
            else [sys.executable, "-m", "fsdiff"])
    sets = [a for s in SETS for a in ("--set", s)]
    return [*head, "train", str(REPO_ROOT / "configs" / "synthetic.toml"), "--run-dir", str(run_dir), *sets,
            "--quiet", "--threads", "1", *extra]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _train(run_dir: Path, procs: int, *extra: str) -> None:
    r = subprocess.run(_command(run_dir, procs, *extra), env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def _final(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / f"step_{STEPS:08d}.pt", weights_only=True)


def _losses(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def _relative(a: dict, b: dict) -> float:
    num = sum(float((a[k].double() - b[k].double()).square().sum()) for k in a)
    return (num / sum(float(a[k].double().square().sum()) for k in a)) ** 0.5


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    _train(root / "two", 2)
    _train(root / "one", 1)
    _train(root / "micro", 1, "--set", "training.micro_batch_size=4")
    return root


def test_two_gloo_ranks_equal_one_process(runs):
    two, one, micro = _final(runs / "two"), _final(runs / "one"), _final(runs / "micro")
    l2, l1 = _losses(runs / "two"), _losses(runs / "one")
    assert len(l2) == len(l1) == STEPS
    assert l2 == pytest.approx(l1, rel=1e-5)
    assert two["metrics"]["levels"]["8"]["steps"] + two["metrics"]["levels"]["16"]["steps"] == STEPS
    assert {k: v["samples"] for k, v in two["metrics"]["levels"].items()} == \
        {k: v["samples"] for k, v in one["metrics"]["levels"].items()}  # same levels chosen on every rank
    assert 0 < _relative(one["model"]["state_dict"], two["model"]["state_dict"]) < 1e-4
    for k, v in micro["model"]["state_dict"].items():
        torch.testing.assert_close(two["model"]["state_dict"][k], v, rtol=1e-6, atol=1e-7)
    assert len(two["rng"]["shards"]) == 1  # every shard's streams are in rank 0's checkpoint


def test_kill_and_resume_under_torchrun(runs):
    killed = runs / "killed"
    proc = subprocess.Popen(_command(killed, 2), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    first = killed / "checkpoints" / "step_00000005.pt"
    deadline = time.monotonic() + 240
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    steps = sorted(int(p.stem[5:]) for p in (killed / "checkpoints").glob("step_*.pt"))
    assert steps and steps[-1] < STEPS, f"the run was not interrupted mid-way (checkpoints {steps})"
    single = runs / "killed-then-one"
    shutil.copytree(killed, single)

    _train(killed, 2, "--resume")
    ref, got = _final(runs / "two"), _final(killed)
    for k, v in ref["model"]["state_dict"].items():
        assert torch.equal(got["model"]["state_dict"][k], v), k
    assert _losses(killed)[-STEPS + steps[-1]:] == _losses(runs / "two")[steps[-1]:]

    _train(single, 1, "--resume")  # a different world size: the same streams, float tolerance
    assert _relative(ref["model"]["state_dict"], _final(single)["model"]["state_dict"]) < 1e-4


def test_shards_must_divide_over_the_ranks(tmp_path):
    r = subprocess.run(_command(tmp_path / "bad", 2, "--set", "training.data_shards=1"), env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "training.data_shards (1) must be a multiple of the number of processes (2)" in r.stdout + r.stderr
    assert not (tmp_path / "bad").exists()  # refused before anything is written


def test_every_rank_returns_the_final_checkpoint_without_periodic_ones(tmp_path):
    # Only rank 0 writes; with no periodic checkpoints the other rank must wait for the final one.
    run_dir = tmp_path / "final-only"
    _train(run_dir, 2, "--set", "training.checkpoint_every=0", "--set", "training.steps=4",
           "--set", "training.eval_every=0")
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step_*.pt")) == ["step_00000004.pt"]
