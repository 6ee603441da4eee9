"""Rerun the fault probe of issue 13: bad input and faults, tried as a new user would.

Every case states what fsdiff promises (``refuse``: a clear error, in one line from the CLI, and
nothing changed on disk; ``work``: the right result) and gets one verdict:

* ``ok``         -- the promise holds;
* ``TRACEBACK``  -- the CLI printed a traceback (no ``--debug``);
* ``SILENT``     -- a refusal was expected but a result came back;
* ``UNCLEAR``    -- refused, but with an exception type or message that does not say what is wrong;
* ``DATA LOSS``  -- a file that existed before changed or vanished;
* ``WRONG``      -- a ``work`` case gave the wrong result.

Usage::

    python tools/fault_probe.py [--out docs/fault_probe.md]

Exit status 1 if any case is not ``ok``. Takes about a minute on 2 cores (tiny synthetic runs).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

import fsdiff as fd
from fsdiff._paths import CONFIGS_DIR, REPO_ROOT
from fsdiff.app.cli import main as cli_main
from fsdiff.app.generate import parse_resolution
from fsdiff.errors import FsdiffError
from fsdiff.training import latest_checkpoint

SYN = str(CONFIGS_DIR / "synthetic.toml")
TINY = ["grid.shape=[16, 16]", "multilevel.levels=[8, 16]", "model.channels=[8, 8, 8]", "model.modes=3",
        "model.stats_samples=64", "training.steps=4", "training.batch_size=4", "training.n_val=4",
        "training.eval_every=2", "training.checkpoint_every=2", "training.warmup_steps=1"]
#: exceptions that say "your input is wrong"; anything else (AttributeError, IndexError, ...) is a bug
CLEAR = (FsdiffError, ValueError, TypeError, OSError, FloatingPointError, KeyError, pickle.UnpicklingError)


@dataclass
class Outcome:
    verdict: str
    detail: str


def _sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def cli(*args: str) -> tuple[int, str]:
    """Run the CLI in this process; (exit status, stderr)."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            rc = cli_main([*args, "--quiet"] if args and args[0] in ("train", "sample", "superres", "inpaint")
                          else list(args))
        except SystemExit as e:  # argparse refusals
            rc = int(e.code or 0)
        except BaseException:  # noqa: BLE001 - a traceback is the finding
            import traceback

            traceback.print_exc(file=err)
            rc = 1
    return rc, err.getvalue()


def refused_cli(rc: int, err: str) -> Outcome:
    if "Traceback" in err:
        return Outcome("TRACEBACK", err.strip().splitlines()[-1])
    if rc == 0:
        return Outcome("SILENT", "exit status 0")
    line = err.strip().splitlines()[-1] if err.strip() else ""
    if not line or "weights_only=False" in err:
        return Outcome("UNCLEAR", line or f"exit {rc}, no message")
    return Outcome("ok", f"exit {rc}: {line[:150]}")


def refused_api(fn: Callable[[], object], expect: type | tuple = CLEAR, match: str = "") -> Outcome:
    try:
        out = fn()
    except expect as e:
        msg = str(e)
        if match and match not in msg:
            return Outcome("UNCLEAR", f"{type(e).__name__}: {msg[:150]}")
        return Outcome("ok", f"{type(e).__name__}: {msg[:150]}")
    except Exception as e:  # noqa: BLE001
        return Outcome("UNCLEAR", f"{type(e).__name__}: {str(e)[:150]}")
    if isinstance(out, torch.Tensor) and not torch.isfinite(out).all():
        return Outcome("SILENT", "returned non-finite values")
    return Outcome("SILENT", f"returned {type(out).__name__}")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and p.name != ".lock"}


def unchanged(before: dict[str, bytes], folder: Path, result: Outcome) -> Outcome:
    after = snapshot(folder)
    lost = [k for k, v in before.items() if after.get(k) != v]
    if lost:
        return Outcome("DATA LOSS", f"changed or removed: {', '.join(lost[:4])}")
    return result


class Probe:
    """The shared fixtures: a tiny trained run, its export, a work folder."""

    def __init__(self, work: Path):
        self.work = work
        self.run = work / "run"
        rc, err = cli("train", SYN, "--run-dir", str(self.run), *_sets(TINY))
        assert rc == 0, err
        self.ckpt = latest_checkpoint(self.run)
        self.export = work / "tiny.pt"
        assert cli("export", str(self.run), "--out", str(self.export))[0] == 0
        self.grid, self.sde = fd.Grid((16, 16)), fd.VPSDE(fd.Matern())
        self.n = 0

    def fresh(self, name: str) -> Path:
        self.n += 1
        return self.work / f"{self.n:02d}-{name}"

    def copy_run(self) -> Path:
        import shutil

        dst = self.fresh("copy")
        shutil.copytree(self.run, dst)
        return dst


CASES: list[tuple[str, str, Callable[[Probe], Outcome]]] = []


def case(group: str, what: str):
    def deco(fn):
        CASES.append((group, what, fn))
        return fn
    return deco


# ----------------------------------------------------------------------------- run directories
@case("run dir", "train into an existing run without --resume")
def _(p):
    run = p.copy_run()
    before = snapshot(run)
    return unchanged(before, run, refused_cli(*cli("train", SYN, "--run-dir", str(run), *_sets(TINY + ["training.lr=0.5"]))))


@case("run dir", "a second train into a run that is training (started 0.5 s later)")
def _(p):
    run = p.fresh("second")
    long = TINY[:-7] + ["training.steps=40", "training.batch_size=4", "training.n_val=4", "training.eval_every=20",
                        "training.checkpoint_every=20", "training.warmup_steps=1", "model.stats_samples=64"]
    cmd = [sys.executable, "-m", "fsdiff", "train", SYN, "--run-dir", str(run), "--quiet", "--threads", "1", *_sets(long)]
    first = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (run / ".lock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    second = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    first.wait()
    if first.returncode != 0:
        return Outcome("DATA LOSS", f"the first run failed: {first.stderr.strip()[-150:]}")
    ck = latest_checkpoint(run)
    if ck is None or ck.name != "step_00000040.pt":
        return Outcome("DATA LOSS", "the first run's final checkpoint is missing")
    return refused_cli(second.returncode, second.stderr)


@case("run dir", "two trains started together into one run directory")
def _(p):
    run = p.fresh("together")
    cmd = [sys.executable, "-m", "fsdiff", "train", SYN, "--run-dir", str(run), "--quiet", "--threads", "1", *_sets(TINY)]
    procs = [subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(q.wait(), q.stderr.read()) for q in procs]
    codes = sorted(r for r, _ in results)
    if codes != [0, 2]:
        return Outcome("DATA LOSS" if codes == [0, 0] else "UNCLEAR", f"exit statuses {codes}")
    return refused_cli(*[r for r in results if r[0] == 2][0])


@case("run dir", "--resume with no checkpoints")
def _(p):
    return refused_cli(*cli("train", SYN, "--run-dir", str(p.fresh("empty")), "--resume", *_sets(TINY)))


@case("run dir", "--resume with a changed lr (not a resumable field)")
def _(p):
    run = p.copy_run()
    before = snapshot(run)
    return unchanged(before, run, refused_cli(*cli("train", SYN, "--run-dir", str(run), "--resume",
                                                   *_sets(TINY + ["training.lr=0.5"]))))


@case("run dir", "--resume with more steps: accepted and recorded")
def _(p):
    run = p.copy_run()
    rc, err = cli("train", SYN, "--run-dir", str(run), "--resume", *_sets(TINY[:5] + ["training.steps=6"] + TINY[6:]))
    if rc != 0:
        return Outcome("WRONG", err.strip()[-150:])
    ck = fd.load_checkpoint(latest_checkpoint(run))
    ok = ck["metrics"].get("resumes") == [{"step": 4, "changes": {"training.steps": [4, 6]}}] \
        and "steps = 6" in (run / "config.toml").read_text()
    return Outcome("ok" if ok else "WRONG", f"recorded: {ck['metrics'].get('resumes')}")


@case("run dir", "--resume --force-config --set model.channels=[4,8,8] (state-dict mismatch)")
def _(p):
    run = p.copy_run()
    before = snapshot(run)
    return unchanged(before, run, refused_cli(*cli("train", SYN, "--run-dir", str(run), "--resume", "--force-config",
                                                   *_sets(TINY + ["model.channels=[4, 8, 8]"]))))


@case("run dir", "an orphan .step_*.tmp.pt of a killed save is removed on the next train")
def _(p):
    run = p.copy_run()
    orphan = run / "checkpoints" / ".step_00000006.abc123.tmp.pt"
    orphan.write_bytes(b"half a checkpoint")
    rc, err = cli("train", SYN, "--run-dir", str(run), "--resume", *_sets(TINY[:5] + ["training.steps=6"] + TINY[6:]))
    return Outcome("ok" if rc == 0 and not orphan.exists() else "WRONG", f"exit {rc}, orphan exists: {orphan.exists()}")


def _kill_and_resume(p: Probe, mid_save: bool) -> Outcome:
    long = [o for o in TINY if not o.startswith(("training.steps", "training.checkpoint_every"))]
    long += ["training.steps=12", "training.checkpoint_every=1", "training.keep_checkpoints=30"]
    ref, run = p.fresh("ref"), p.fresh("killed")
    assert cli("train", SYN, "--run-dir", str(ref), *_sets(long))[0] == 0
    cmd = [sys.executable, "-m", "fsdiff", "train", SYN, "--run-dir", str(run), "--quiet", "--threads", "1", *_sets(long)]
    q = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and q.poll() is None:
        ck = run / "checkpoints"
        done = list(ck.glob("step_*.pt")) if ck.is_dir() else []
        if done and (not mid_save or list(ck.glob(".step_*.tmp*"))):  # a later save is half-written
            break
        time.sleep(0.002)
    q.send_signal(signal.SIGKILL)
    q.wait()
    if q.returncode != -signal.SIGKILL:
        return Outcome("WRONG", "finished before the kill")
    rc, err = cli("train", SYN, "--run-dir", str(run), "--resume", *_sets(long))
    if rc != 0:
        return Outcome("WRONG", err.strip()[-150:])
    a = fd.load_checkpoint(ref / "checkpoints" / "step_00000012.pt")["model"]["state_dict"]
    b = fd.load_checkpoint(run / "checkpoints" / "step_00000012.pt")["model"]["state_dict"]
    same = all(torch.equal(v, b[k]) for k, v in a.items())
    return Outcome("ok" if same else "WRONG", "bit-identical after resume" if same else "parameters differ")


@case("run dir", "kill -9 during training, then --resume")
def _(p):
    return _kill_and_resume(p, mid_save=False)


@case("run dir", "kill -9 in the middle of a checkpoint write, then --resume")
def _(p):
    return _kill_and_resume(p, mid_save=True)


# ----------------------------------------------------------------------------- outputs and disk
def _enospc_on(suffix: str):
    real = os.replace

    def full(src, dst):
        if str(dst).endswith(suffix):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)
    return real, full


@case("outputs", "disk full (ENOSPC) while writing a checkpoint")
def _(p):
    run = p.copy_run()
    before = snapshot(run)
    real, full = _enospc_on(".pt")
    os.replace = full
    try:
        out = refused_cli(*cli("train", SYN, "--run-dir", str(run), "--resume",
                               *_sets(TINY[:5] + ["training.steps=6"] + TINY[6:])))
    finally:
        os.replace = real
    kept = {k: v for k, v in before.items() if k.startswith("checkpoints")}
    return unchanged(kept, run, out)


@case("outputs", "disk full (ENOSPC) while writing samples")
def _(p):
    out = p.fresh("s") / "s.nc"
    real, full = _enospc_on(".nc")
    os.replace = full
    try:
        res = refused_cli(*cli("sample", str(p.export), "--n", "2", "--steps", "2", "--out", str(out)))
    finally:
        os.replace = real
    leftovers = list(out.parent.glob("*")) if out.parent.exists() else []
    return res if not leftovers else Outcome("UNCLEAR", f"left {leftovers}")


@case("outputs", "read-only output (EROFS) for samples")
def _(p):
    real = os.replace

    def ro(src, dst):
        raise OSError(errno.EROFS, "Read-only file system")
    os.replace = ro
    try:
        return refused_cli(*cli("sample", str(p.export), "--n", "2", "--steps", "2", "--out", str(p.fresh("ro") / "s.nc")))
    finally:
        os.replace = real


@case("outputs", "--out under a file (refused before sampling)")
def _(p):
    f = p.fresh("file")
    f.write_text("x")
    t = time.perf_counter()
    out = refused_cli(*cli("sample", str(p.export), "--n", "2", "--steps", "200", "--out", str(f / "s.nc")))
    return out if time.perf_counter() - t < 5 else Outcome("UNCLEAR", "refused only after sampling")


@case("outputs", "--out into /proc")
def _(p):
    return refused_cli(*cli("sample", str(p.export), "--n", "2", "--steps", "2", "--out", "/proc/fsdiff_probe/s.nc"))


@case("outputs", "export onto an existing file without --force")
def _(p):
    before = p.export.read_bytes()
    out = refused_cli(*cli("export", str(p.run), "--out", str(p.export)))
    return out if p.export.read_bytes() == before else Outcome("DATA LOSS", "export overwritten")


@case("outputs", "sample --out with an unknown extension")
def _(p):
    return refused_cli(*cli("sample", str(p.export), "--n", "2", "--steps", "2", "--out", str(p.fresh("x") / "s.xyz")))


# ----------------------------------------------------------------------------- checkpoints
def _bad_checkpoint(p: Probe, data: bytes) -> Outcome:
    f = p.fresh("bad.pt")
    f.write_bytes(data)
    return refused_cli(*cli("sample", str(f), "--n", "2", "--steps", "2", "--out", str(p.fresh("o") / "s.nc")))


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/fsdiff_probe_pwned",))


@case("checkpoints", "a malicious pickle (os.system in __reduce__)")
def _(p):
    buf = io.BytesIO()
    torch.save({"x": _Evil()}, buf)
    out = _bad_checkpoint(p, buf.getvalue())
    return out if not Path("/tmp/fsdiff_probe_pwned").exists() else Outcome("WRONG", "code ran")


@case("checkpoints", "random bytes as a checkpoint")
def _(p):
    return _bad_checkpoint(p, os.urandom(4096))


@case("checkpoints", "an empty checkpoint file")
def _(p):
    return _bad_checkpoint(p, b"")


@case("checkpoints", "a truncated checkpoint (half its bytes)")
def _(p):
    data = p.export.read_bytes()
    return _bad_checkpoint(p, data[: len(data) // 2])


@case("checkpoints", "a checkpoint with a missing key")
def _(p):
    ck = torch.load(p.export, weights_only=True)
    ck.pop("model")
    buf = io.BytesIO()
    torch.save(ck, buf)
    return _bad_checkpoint(p, buf.getvalue())


@case("checkpoints", "a checkpoint whose state dict lacks a weight")
def _(p):
    ck = torch.load(p.export, weights_only=True)
    ck["model"]["state_dict"].pop(next(iter(ck["model"]["state_dict"])))
    buf = io.BytesIO()
    torch.save(ck, buf)
    return _bad_checkpoint(p, buf.getvalue())


@case("checkpoints", "sample a checkpoint that does not exist")
def _(p):
    return refused_cli(*cli("sample", str(p.work / "nope.pt"), "--n", "2"))


@case("checkpoints", "sample a folder without checkpoints")
def _(p):
    d = p.fresh("nockpt")
    d.mkdir()
    return refused_cli(*cli("sample", str(d), "--n", "2"))


# ----------------------------------------------------------------------------- configs
@case("config", "a config file that does not exist")
def _(p):
    return refused_cli(*cli("train", str(p.work / "nope.toml"), "--run-dir", str(p.fresh("r"))))


@case("config", "a config that is not valid TOML")
def _(p):
    f = p.fresh("bad.toml")
    f.write_text("[grid\nshape = ")
    return refused_cli(*cli("train", str(f), "--run-dir", str(p.fresh("r"))))


@case("config", "an unknown key (training.stepz)")
def _(p):
    return refused_cli(*cli("train", SYN, "--run-dir", str(p.fresh("r")), "--set", "training.stepz=3"))


@case("config", "a value of the wrong type (training.steps=\"abc\")")
def _(p):
    return refused_cli(*cli("train", SYN, "--run-dir", str(p.fresh("r")), "--set", "training.steps=abc"))


@case("config", "a negative step count")
def _(p):
    return refused_cli(*cli("train", SYN, "--run-dir", str(p.fresh("r")), "--set", "training.steps=-3"))


@case("config", "an override without '='")
def _(p):
    return refused_cli(*cli("train", SYN, "--run-dir", str(p.fresh("r")), "--set", "training.steps"))


@case("config", "an unknown model type")
def _(p):
    return refused_cli(*cli("train", SYN, "--run-dir", str(p.fresh("r")), "--set", 'model.type="resnet"'))


@case("config", "an unknown SDE type")
def _(p):
    return refused_cli(*cli("train", SYN, "--run-dir", str(p.fresh("r")), "--set", 'sde.type="xx"'))


@case("config", "a non-trace-class noise (white noise in 2-D)")
def _(p):
    return refused_cli(*cli("train", SYN, "--run-dir", str(p.fresh("r")), "--set", 'sde.covariance={type="white"}'))


@case("config", "a negative learning rate")
def _(p):
    return refused_cli(*cli("train", SYN, "--run-dir", str(p.fresh("r")), "--set", "training.lr=-1"))


@case("config", "MNIST with a data folder that does not exist")
def _(p):
    old = os.environ.get("FSDIFF_DATA_DIR")
    os.environ["FSDIFF_DATA_DIR"] = str(p.work / "no-data")
    try:
        return refused_cli(*cli("train", str(CONFIGS_DIR / "mnist.toml"), "--run-dir", str(p.fresh("r"))))
    finally:
        if old is None:
            os.environ.pop("FSDIFF_DATA_DIR")
        else:
            os.environ["FSDIFF_DATA_DIR"] = old


@case("config", "training that diverges (lr = 1e6, no clipping)")
def _(p):
    return refused_cli(*cli("train", SYN, "--run-dir", str(p.fresh("r")),
                            *_sets(TINY + ["training.lr=1e6", "training.grad_clip=0.0"])))


# ----------------------------------------------------------------------------- CLI arguments
@case("cli", "--threads -1")
def _(p):
    return refused_cli(*cli("train", SYN, "--threads", "-1", "--run-dir", str(p.fresh("r"))))


@case("cli", "sample --resolution 7x")
def _(p):
    return refused_cli(*cli("sample", str(p.export), "--resolution", "7x", "--out", str(p.fresh("o") / "s.nc")))


@case("cli", "sample --resolution 0")
def _(p):
    return refused_cli(*cli("sample", str(p.export), "--resolution", "0", "--out", str(p.fresh("o") / "s.nc")))


@case("cli", "sample --resolution 16x16x16 for a 2-D model")
def _(p):
    return refused_cli(*cli("sample", str(p.export), "--resolution", "16x16x16", "--out", str(p.fresh("o") / "s.nc")))


@case("cli", "sample --n 0")
def _(p):
    return refused_cli(*cli("sample", str(p.export), "--n", "0", "--out", str(p.fresh("o") / "s.nc")))


@case("cli", "sample --n -3")
def _(p):
    return refused_cli(*cli("sample", str(p.export), "--n", "-3", "--out", str(p.fresh("o") / "s.nc")))


@case("cli", "sample --steps 0")
def _(p):
    return refused_cli(*cli("sample", str(p.export), "--steps", "0", "--out", str(p.fresh("o") / "s.nc")))


@case("cli", "sample --chunk-size 0")
def _(p):
    return refused_cli(*cli("sample", str(p.export), "--chunk-size", "0", "--out", str(p.fresh("o") / "s.nc")))


@case("cli", "an unknown sampler name")
def _(p):
    return refused_cli(*cli("sample", str(p.export), "--sampler", "ddim"))


def _png(path: Path, shape: tuple[int, int]) -> Path:
    import matplotlib.image as mpimg
    import numpy as np

    mpimg.imsave(path, np.linspace(0, 1, shape[0] * shape[1]).reshape(shape), cmap="gray", vmin=0, vmax=1)
    return path


@case("cli", "superres to a grid coarser than the input")
def _(p):
    img = _png(p.fresh("in.png"), (16, 16))
    return refused_cli(*cli("superres", str(p.export), "--input", str(img), "--resolution", "8",
                            "--out", str(p.fresh("o") / "s.nc")))


@case("cli", "inpaint with a mask of the wrong shape")
def _(p):
    img, mask = _png(p.fresh("in.png"), (16, 16)), _png(p.fresh("mask.png"), (8, 8))
    return refused_cli(*cli("inpaint", str(p.export), "--input", str(img), "--mask", str(mask),
                            "--out", str(p.fresh("o") / "s.nc")))


@case("cli", "superres from an input that does not exist")
def _(p):
    return refused_cli(*cli("superres", str(p.export), "--input", str(p.work / "nope.png"),
                            "--out", str(p.fresh("o") / "s.nc")))


@case("cli", "superres from a .txt input")
def _(p):
    f = p.fresh("in.txt")
    f.write_text("1 2 3")
    return refused_cli(*cli("superres", str(p.export), "--input", str(f), "--out", str(p.fresh("o") / "s.nc")))


# ----------------------------------------------------------------------------- the library
@case("api", "VPSDE.perturb(t = -0.5)")
def _(p):
    return refused_api(lambda: p.sde.perturb(torch.zeros(2, 1, 16, 16), -0.5, p.grid), match="[0, T")


@case("api", "VESDE.perturb(t = -0.5)")
def _(p):
    return refused_api(lambda: fd.VESDE(fd.Matern()).perturb(torch.zeros(2, 1, 16, 16), -0.5, p.grid), match="[0, T")


@case("api", "dsm_loss(t = -1)")
def _(p):
    return refused_api(lambda: fd.dsm_loss(lambda a, t, g: a, torch.zeros(2, 1, 16, 16), p.sde, p.grid, t=-1.0),
                       match="[0, T")


@case("api", "sde.perturb(t = 2 > T)")
def _(p):
    return refused_api(lambda: p.sde.perturb(torch.zeros(2, 1, 16, 16), 2.0, p.grid), match="[0, T")


@case("api", "Matern().sample(dtype = int64)")
def _(p):
    return refused_api(lambda: fd.Matern().sample(p.grid, 2, dtype=torch.int64), TypeError)


@case("api", "Matern().sample(generator = 0)")
def _(p):
    return refused_api(lambda: fd.Matern().sample(p.grid, 2, generator=0), TypeError, "torch.Generator")


@case("api", "Grid((16.5, 16))")
def _(p):
    return refused_api(lambda: fd.Grid((16.5, 16)), ValueError, "whole numbers")


@case("api", "Grid(16.7)")
def _(p):
    return refused_api(lambda: fd.Grid(16.7), ValueError, "whole numbers")


@case("api", "Grid((8, 8, 8, 8)) (4-D)")
def _(p):
    return refused_api(lambda: fd.Grid((8, 8, 8, 8)), ValueError)


@case("api", "Grid(1) (one point)")
def _(p):
    return refused_api(lambda: fd.Grid(1), ValueError)


@case("api", "Matern(alpha = -1)")
def _(p):
    return refused_api(lambda: fd.Matern(alpha=-1.0), ValueError)


@case("api", "Matern(tau = nan)")
def _(p):
    return refused_api(lambda: fd.Matern(tau=float("nan")), ValueError)


@case("api", "NaN into Covariance.apply(check_finite=True)")
def _(p):
    return refused_api(lambda: fd.Matern().apply(torch.full((1, 1, 16, 16), float("nan")), p.grid, check_finite=True),
                       match="non-finite")


@case("api", "NaN into sde.perturb")
def _(p):
    return refused_api(lambda: p.sde.perturb(torch.full((2, 1, 16, 16), float("nan")), 0.5, p.grid), match="non-finite")


@case("api", "Inf into dsm_loss")
def _(p):
    return refused_api(lambda: fd.dsm_loss(lambda a, t, g: a, torch.full((2, 1, 16, 16), float("inf")), p.sde, p.grid),
                       match="non-finite")


@case("api", "NaN into an FNOScore")
def _(p):
    m = fd.models.FNOScore(modes=(3, 3), width=8, n_layers=1)
    return refused_api(lambda: m(torch.full((2, 1, 16, 16), float("nan")), torch.full((2,), 0.5), p.grid),
                       match="non-finite")


@case("api", "NaN into resample")
def _(p):
    return refused_api(lambda: fd.resample(torch.full((1, 1, 16, 16), float("nan")), p.grid, fd.Grid((32, 32))),
                       match="non-finite")


@case("api", "resample between domains of different length")
def _(p):
    return refused_api(lambda: fd.resample(torch.zeros(1, 1, 16, 16), p.grid, fd.Grid((32, 32), 2.0)), ValueError)


@case("api", "a tensor of the wrong shape for its grid")
def _(p):
    return refused_api(lambda: fd.Matern().apply(torch.zeros(1, 1, 16, 15), p.grid), ValueError)


@case("api", "a model that returns NaN, in sample()")
def _(p):
    return refused_api(lambda: fd.sample(lambda a, t, g: a * float("nan"), p.sde, p.grid, 2, steps=2),
                       FloatingPointError, "model returned non-finite")


@case("api", "parse_resolution('6 4')")
def _(p):
    return refused_api(lambda: parse_resolution("6 4", 2), ValueError)


def run_all(work: Path, only: str = "", groups: tuple[str, ...] = ()) -> list[tuple[str, str, Outcome, float]]:
    """Run the cases (those whose text contains ``only``, of ``groups`` if given); one row per case."""
    torch.set_num_threads(1)
    probe = Probe(work)
    rows = []
    for group, what, fn in CASES:
        if (only and only not in what) or (groups and group not in groups):
            continue
        t = time.perf_counter()
        try:
            out = fn(probe)
        except Exception as e:  # noqa: BLE001 - the probe itself must report, not stop
            out = Outcome("PROBE ERROR", f"{type(e).__name__}: {e}")
        rows.append((group, what, out, time.perf_counter() - t))
        print(f"{out.verdict:>10}  {group:<11} {what}  --  {out.detail}", flush=True)
    return rows


def to_markdown(rows) -> str:
    n_ok = sum(r[2].verdict == "ok" for r in rows)
    lines = [f"# Fault probe (issue 13): {n_ok} of {len(rows)} cases ok", "",
             "Rerun with `python tools/fault_probe.py --out docs/fault_probe.md`. `ok` means the promise holds: a",
             "refusal is one clear line (exit status 2 from the CLI, a typed exception from the library) and",
             "changes nothing on disk; a `work` case gives the right result.", "",
             "| # | group | case | verdict | what happened |", "|---|---|---|---|---|"]
    for i, (group, what, out, _) in enumerate(rows, 1):
        detail = out.detail.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {i} | {group} | {what} | {out.verdict} | {detail} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="write the table as Markdown here")
    ap.add_argument("-k", default="", help="run only the cases whose description contains this")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_all(Path(tmp), args.k)
        rows = [(g, w, Outcome(o.verdict, o.detail.replace(tmp, "<work>")), dt) for g, w, o, dt in rows]
    bad = [r for r in rows if r[2].verdict != "ok"]
    print(f"\n{len(rows) - len(bad)} of {len(rows)} ok")
    if args.out:
        Path(args.out).write_text(to_markdown(rows))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
