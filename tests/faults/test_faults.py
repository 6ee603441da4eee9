"""Faults and bad input (issue 13): nothing lost, nothing silently wrong, one clear error."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
import torch

import fsdiff as fd
from fsdiff._paths import CONFIGS_DIR, REPO_ROOT
from fsdiff.app.cli import main
from fsdiff.app.generate import parse_resolution
from fsdiff.errors import ConfigError, GridError, OutputError, RunDirectoryError
from fsdiff.training.rundir import run_lock

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = ["grid.shape=[16, 16]", "multilevel.levels=[8, 16]", "model.channels=[8, 8, 8]", "model.modes=3",
        "model.stats_samples=64", "training.steps=4", "training.batch_size=4", "training.n_val=4",
        "training.eval_every=2", "training.checkpoint_every=2", "training.warmup_steps=1"]
SIX = [o if o != "training.steps=4" else "training.steps=6" for o in TINY]  # only the step count changes


def _train(run, *extra, tiny=TINY):
    args = ["train", str(CONFIGS_DIR / "synthetic.toml"), "--run-dir", str(run), "--quiet"]
    for o in tiny:
        args += ["--set", o]
    return main(args + list(extra))


def test_boundary_checks():
    g = fd.Grid(16)
    sde = fd.VPSDE(fd.Matern())
    x = torch.zeros(2, 1, 16)
    with pytest.raises(ValueError, match=r"\[0, T"):
        sde.perturb(x, -0.5, g)
    with pytest.raises(ValueError, match=r"\[0, T"):
        fd.VESDE(fd.Matern()).perturb(x, -0.5, g)
    with pytest.raises(ValueError, match=r"\[0, T"):
        fd.dsm_loss(lambda a, t, grid: a, x, sde, g, t=-1.0)
    with pytest.raises(ValueError, match="non-finite"):
        fd.dsm_loss(lambda a, t, grid: a, x * float("nan"), sde, g)
    with pytest.raises(TypeError, match="floating"):
        fd.Matern().sample(g, 2, dtype=torch.int64)
    with pytest.raises(TypeError, match="torch.Generator"):
        fd.Matern().sample(g, 2, generator=0)
    for bad in ((16.5, 16), 16.7, "16"):
        with pytest.raises(GridError, match="whole numbers"):
            fd.Grid(bad)
    for bad in ("7x", "x7", "6 4"):
        with pytest.raises(ValueError, match="not an integer"):
            parse_resolution(bad, 2)
    with pytest.raises(FloatingPointError, match="model returned non-finite"):
        fd.sample(lambda a, t, grid: a * float("nan"), sde, g, 2, steps=2)


def test_refused_train_changes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run) == 0
    before = (run / "config.toml").read_bytes()
    assert _train(run, tiny=TINY + ["training.lr=0.5"]) == 2  # not --resume: refused before any write
    assert "already holds checkpoints" in capsys.readouterr().err
    assert (run / "config.toml").read_bytes() == before
    assert _train(run, "--resume", tiny=TINY + ["model.channels=[4, 8, 8]"]) == 2  # unsafe change on resume
    assert "model.channels: cannot change on resume" in capsys.readouterr().err
    assert (run / "config.toml").read_bytes() == before


def test_resume_with_more_steps_is_recorded(tmp_path):
    run = tmp_path / "run"
    assert _train(run) == 0
    assert _train(run, "--resume", tiny=SIX) == 0
    ck = fd.load_checkpoint(run / "checkpoints" / "step_00000006.pt")
    assert ck["metrics"]["resumes"] == [{"step": 4, "changes": {"training.steps": [4, 6]}}]
    assert "steps = 6" in (run / "config.toml").read_text()


def test_lock_refuses_a_second_process(tmp_path):
    run = tmp_path / "run"
    with run_lock(run):
        code = ("import sys; from fsdiff.training.rundir import run_lock\n"
                "try:\n    run_lock(sys.argv[1]).__enter__()\nexcept Exception as e:\n    print(type(e).__name__, e); sys.exit(3)")
        r = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True, cwd=REPO_ROOT)
        assert r.returncode == 3 and "RunDirectoryError" in r.stdout and f"PID {os.getpid()}" in r.stdout
    assert not (run / ".lock").exists()
    with run_lock(run), run_lock(run):  # re-entrant in one process
        pass


def test_disk_full_during_checkpoint_keeps_the_old_files(tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert _train(run) == 0
    old = sorted(p.name for p in (run / "checkpoints").iterdir())
    real_replace = os.replace

    def full(src, dst):
        if str(dst).endswith(".pt"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OutputError, match="No space left on device.*checkpoint of step 6.*intact"):
        cfg = fd.load_config(CONFIGS_DIR / "synthetic.toml", SIX)
        fd.train_from_config(cfg, run, resume=True, progress=False)
    monkeypatch.setattr(os, "replace", real_replace)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == old  # no temp file left, nothing lost


def test_unwritable_output_is_refused_before_sampling(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    pre = REPO_ROOT / "pretrained" / "mnist.pt"
    assert main(["sample", str(pre), "--n", "2", "--steps", "1", "--out", str(blocker / "s.nc"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "Traceback" not in err
    assert main(["sample", str(pre), "--n", "2", "--resolution", "7x", "--out", str(tmp_path / "s.nc")]) == 2
    assert main(["train", str(CONFIGS_DIR / "synthetic.toml"), "--threads", "-1", "--run-dir", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()


def test_config_error_is_a_fsdiff_error():
    with pytest.raises(ConfigError):
        fd.load_config(CONFIGS_DIR / "synthetic.toml", ["training.stepz=3"])
    assert issubclass(RunDirectoryError, FileExistsError) and issubclass(OutputError, OSError)


def test_kill_minus_9_then_resume_is_bit_identical(tmp_path):
    """SIGKILL a real ``fsdiff train`` process twice at random moments (also mid-checkpoint), resume."""
    import random
    import signal
    import time

    long = [o for o in TINY if not o.startswith(("training.steps", "training.checkpoint_every"))]
    long += ["training.steps=14", "training.checkpoint_every=1", "training.keep_checkpoints=30"]
    ref = tmp_path / "ref"
    assert _train(ref, tiny=long) == 0
    run, rng = tmp_path / "run", random.Random(0)
    cmd = [sys.executable, "-m", "fsdiff", "train", str(CONFIGS_DIR / "synthetic.toml"), "--run-dir", str(run),
           "--quiet", "--threads", "1"] + [a for o in long for a in ("--set", o)]
    for attempt in range(2):
        p = subprocess.Popen(cmd + (["--resume"] if attempt else []), cwd=REPO_ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        n_before = len(list((run / "checkpoints").glob("step_*.pt"))) if (run / "checkpoints").is_dir() else 0
        while time.monotonic() < deadline and p.poll() is None:  # wait for one new checkpoint, then a random moment
            if (run / "checkpoints").is_dir() and len(list((run / "checkpoints").glob("step_*.pt"))) > n_before:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.05))
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert p.returncode == -signal.SIGKILL, "the run finished before it could be killed: make it longer"
    assert _train(run, "--resume", tiny=long) == 0  # the lock of the killed process does not block
    a = fd.load_checkpoint(ref / "checkpoints" / "step_00000014.pt")
    b = fd.load_checkpoint(run / "checkpoints" / "step_00000014.pt")
    for part in ("model", "ema"):
        for k, v in a[part]["state_dict"].items():
            assert torch.equal(v, b[part]["state_dict"][k]), (part, k)
    assert not [p.name for p in run.rglob("*.tmp*")]


def test_non_finite_inputs_and_white_noise_are_refused(tmp_path):
    g = fd.Grid((16, 16))
    nan = torch.full((2, 1, 16, 16), float("nan"))
    with pytest.raises(ValueError, match="x0 holds 512 non-finite"):
        fd.VPSDE(fd.Matern()).perturb(nan, 0.5, g)
    with pytest.raises(ValueError, match="u holds 512 non-finite"):
        fd.resample(nan, g, fd.Grid((32, 32)))
    model = fd.models.FNOScore(modes=(3, 3), width=8, n_layers=1)
    with pytest.raises(ValueError, match="x_t holds 512 non-finite"):
        model(nan, torch.full((2,), 0.5), g)
    run = tmp_path / "white"
    assert _train(run, tiny=TINY + ['sde.covariance={type="white"}']) == 2  # not trace class in 2-D
    assert not (run / "config.toml").exists() and not (run / "checkpoints").exists()


def test_fault_probe_library_and_cli_cases(tmp_path):
    """The in-process part of ``tools/fault_probe.py`` (the full 67-case probe takes about a minute)."""
    sys.path.insert(0, str(REPO_ROOT / "tools"))
    try:
        import fault_probe
    finally:
        sys.path.pop(0)
    rows = fault_probe.run_all(tmp_path, groups=("api", "cli", "checkpoints"))
    assert len(rows) >= 30
    assert [(w, o.detail) for _, w, o, _ in rows if o.verdict != "ok"] == []
