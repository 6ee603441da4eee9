"""Training loop: bit-identical resume, accumulation, divergence handling, outputs, checkpoints."""

import csv
import dataclasses
import json

import pytest
import torch
from torch import nn

import fsdiff as fd
from fsdiff.config import TrainingConfig
from fsdiff.data import GaussianRandomField
from fsdiff.io import CheckpointError, load_checkpoint
from fsdiff.training.multilevel import MultilevelSchedule, hierarchy
from fsdiff.training import EMA, TrainingDiverged, latest_checkpoint, lr_at, train

pytestmark = pytest.mark.usefixtures("single_thread")




class Tiny(nn.Module):
    """Stand-in score model: a per-mode multiplier on |k| <= 3 (time-modulated) plus a pointwise layer."""

    def __init__(self, nan_after: int | None = None):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(0.1 * torch.randn(2, 7, 4, generator=g))
        self.a = nn.Parameter(torch.tensor([0.1, 0.0]))
        self.nan_after = nan_after
        self.calls = 0

    def forward(self, x, t, grid):
        self.calls += 1
        xh = grid.rfft(x)
        m = torch.zeros(x.shape[0], 1, *grid.rfft_shape)
        rows = list(range(4)) + list(range(grid.shape[0] - 3, grid.shape[0]))
        tt = t.reshape(-1, 1, 1, 1)
        m[..., rows, :4] = self.w[0] + tt * self.w[1]
        out = grid.irfft(xh * m) + (self.a[0] + self.a[1] * tt) * x
        if self.nan_after is not None and self.calls > self.nan_after:
            out = out * float("nan")
        return out


def _setup(schedule="random", **overrides):
    grids = hierarchy(fd.Grid((16, 16)), [8, 16])
    data = GaussianRandomField(fd.Matern(alpha=1.5, tau=3.0, sigma=8.0))
    sde = fd.VPSDE(fd.Matern(alpha=1.5, tau=3.0, sigma=4.0))
    sched = MultilevelSchedule(grids, schedule, probabilities=[0.5, 0.5], samples=[8, 4])
    cfg = dict(steps=20, batch_size=8, micro_batch_size=3, lr=1e-2, warmup_steps=3, ema_decay=0.9,
               grad_clip=1.0, n_val=8, eval_every=5, checkpoint_every=5, keep_checkpoints=3)
    cfg.update(overrides)
    return data, sde, sched, TrainingConfig(**cfg)


@pytest.mark.parametrize("schedule", ["random", "mlmc"])
def test_resume_is_bit_identical(tmp_path, schedule):
    data, sde, sched, cfg = _setup(schedule)
    m1 = Tiny()
    out1 = train(m1, sde, data, sched, cfg, tmp_path / "a", progress=False)
    m2 = Tiny()
    train(m2, sde, data, sched, cfg, tmp_path / "b", progress=False, stop_at=10)
    assert latest_checkpoint(tmp_path / "b").name == "step_00000010.pt"
    m3 = Tiny()  # a fresh process would rebuild the model from scratch
    out3 = train(m3, sde, data, sched, cfg, tmp_path / "b", progress=False, resume=True)
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m3.state_dict()[k]), k
    ck1, ck3 = load_checkpoint(latest_checkpoint(tmp_path / "a")), load_checkpoint(latest_checkpoint(tmp_path / "b"))
    for k, v in ck1["ema"]["state_dict"].items():
        assert torch.equal(v, ck3["ema"]["state_dict"][k]), k
    for k in ck1["rng"]:
        assert torch.equal(ck1["rng"][k], ck3["rng"][k]), k
    strip = lambda h: [{k: v for k, v in r.items() if k != "wall_s"} for r in h]  # noqa: E731
    assert strip(out1["history"]) == strip(out3["history"])
    # the run did learn something
    assert out1["history"][-1]["loss"] < out1["history"][0]["loss"]


def test_micro_batches_match_the_full_batch(tmp_path):
    data, sde, sched, cfg = _setup("mlmc", steps=3, eval_every=0, checkpoint_every=0)
    models = []
    for i, mb in enumerate([0, 1, 3]):
        m = Tiny()
        train(m, sde, data, sched, dataclasses.replace(cfg, micro_batch_size=mb), tmp_path / str(i), progress=False)
        models.append(m)
    for m in models[1:]:
        for k, v in models[0].state_dict().items():
            torch.testing.assert_close(m.state_dict()[k], v, rtol=1e-5, atol=1e-6)
    changed = [not torch.equal(v, Tiny().state_dict()[k]) for k, v in models[0].state_dict().items()]
    assert all(changed)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    data, sde, sched, cfg = _setup("single", micro_batch_size=0, eval_every=0, checkpoint_every=2, n_val=2)
    m = Tiny(nan_after=5)  # one call per step: steps 1..5 fine, step 6 NaN
    with pytest.raises(TrainingDiverged, match=r"step 6\b.*step_00000004\.pt"):
        train(m, sde, data, sched, cfg, tmp_path, progress=False)
    assert latest_checkpoint(tmp_path).name == "step_00000004.pt"
    ck = load_checkpoint(latest_checkpoint(tmp_path))
    assert ck["step"] == 4 and all(torch.isfinite(v).all() for v in ck["model"]["state_dict"].values())
    assert (tmp_path / "metrics.csv").exists()


def test_outputs_metrics_and_checkpoint_format(tmp_path):
    data, sde, sched, cfg = _setup("coarse_to_fine", steps=10, eval_every=5, checkpoint_every=4, keep_checkpoints=2)
    sched = MultilevelSchedule(sched.grids, "coarse_to_fine", fractions=[0.6, 0.4])
    out = train(Tiny(), sde, data, sched, cfg, tmp_path, progress=False, run_config={"name": "t"})
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_00000008.pt", "step_00000010.pt"]  # only the newest kept, no temp files
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert len(rows) == 10 and [r["level"] for r in rows] == ["8"] * 6 + ["16"] * 4
    assert rows[4]["val_loss_8"] and rows[4]["val_loss_16"] and not rows[3]["val_loss_8"]
    meta = json.load(open(tmp_path / "metrics.json"))
    assert meta["levels"]["8"]["samples"] == 48 and meta["levels"]["16"]["samples"] == 32
    assert meta["levels"]["8"]["wall_s"] > 0 and set(meta["final_validation"]) == {"val_loss_8", "val_loss_16"}
    assert (tmp_path / "loss.png").stat().st_size > 1000
    ck = torch.load(tmp_path / "checkpoints" / "step_00000010.pt", weights_only=True)
    assert ck["format_version"] == 1 and ck["config"] == {"name": "t"} and ck["step"] == 10
    assert set(ck["rng"]) == {"level", "data", "noise"} and all(isinstance(v, torch.Tensor) for v in ck["rng"].values())
    assert out["levels"] == meta["levels"]
    with pytest.raises(FileExistsError, match="resume"):
        train(Tiny(), sde, data, sched, cfg, tmp_path, progress=False)


def test_load_checkpoint_rejects_other_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not an fsdiff checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="expected keys"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"format_version": 1, "config": {}, "model": {"spec": None, "state_dict": {}}, "step": 0,
                "evil": Tiny()}, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="pickled object"):  # weights_only refuses pickled classes
        load_checkpoint(tmp_path / "pickled.pt")


def test_lr_schedule_and_ema():
    cfg = TrainingConfig(steps=110, lr=1.0, warmup_steps=10, final_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0) and lr_at(60, cfg) == pytest.approx(0.55)
    assert lr_at(110, cfg) == pytest.approx(0.1)
    assert all(lr_at(s + 1, cfg) <= lr_at(s, cfg) + 1e-12 for s in range(10, 110))
    m = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(0.0)
    ema = EMA(m, decay=0.5)
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema.update(m)  # decay_0 = min(0.5, 1/10) = 0.1
    assert float(ema.module.weight) == pytest.approx(0.9)
    ema.update(m)  # decay_1 = min(0.5, 2/11)
    assert float(ema.module.weight) == pytest.approx(1 - 0.1 * 2 / 11)
