"""CLI round trip: train a tiny model, sample at two resolutions, read the netCDF back."""

import json

import pytest
import torch
import xarray as xr

from fsdiff._paths import CONFIGS_DIR
from fsdiff.app.cli import main

TINY = [
    "training.steps=4", "training.batch_size=4", "training.eval_every=2", "training.checkpoint_every=2",
    "training.n_val=4", "model.channels=[8, 8, 8]", "model.modes=3", "model.stats_samples=64",
    "grid.shape=[16, 16]", "multilevel.levels=[8, 16]",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, single_thread_module):
    d = tmp_path_factory.mktemp("cli") / "run"
    args = ["train", str(CONFIGS_DIR / "synthetic.toml"), "--run-dir", str(d), "--quiet"]
    for o in TINY:
        args += ["--set", o]
    assert main(args) == 0
    return d


def test_sample_round_trip(run_dir, tmp_path):
    out = tmp_path / "s.nc"
    args = ["sample", str(run_dir), "--resolution", "16", "32", "--n", "3", "--steps", "3", "--seed", "5", "--out", str(out), "--quiet"]
    assert main(args) == 0
    for n in (16, 32):
        path = tmp_path / f"s_{n}.nc"
        assert path.is_file() and path.with_suffix(".png").is_file()
        with xr.open_dataset(path, engine="scipy") as ds:
            da = ds["samples"].load()
        assert da.dims == ("sample", "channel", "x", "y")
        assert da.shape == (3, 1, n, n)
        assert float(da["x"][1]) == pytest.approx(1.0 / n)
        assert da.attrs["sampler"] == "ode_gauss" and da.attrs["time_grid"] == "edm" and int(da.attrs["seed"]) == 5 and int(da.attrs["steps"]) == 3
        assert json.loads(da.attrs["model"])["type"] == "spectral_precond"
        assert "matern" in json.loads(da.attrs["sde"])["covariance"]["type"]
        assert torch.isfinite(torch.as_tensor(da.values)).all()
    # the same seed gives the same samples
    assert main(args[:-3] + ["--out", str(tmp_path / "again.nc"), "--quiet"]) == 0
    with xr.open_dataset(tmp_path / "again_16.nc", engine="scipy") as a, xr.open_dataset(tmp_path / "s_16.nc", engine="scipy") as b:
        assert (a["samples"].values == b["samples"].values).all()


@pytest.mark.parametrize("bad", [["--steps", "0"], ["--resolution", "16x16x16"], ["--n", "0"]])
def test_impossible_requests_fail_clearly(run_dir, tmp_path, bad, capsys):
    assert main(["sample", str(run_dir), "--out", str(tmp_path / "x.nc"), "--quiet", *bad]) == 2
    assert "error" in capsys.readouterr().err


def test_not_a_checkpoint(tmp_path, capsys):
    f = tmp_path / "junk.pt"
    torch.save({"hello": 1}, f)
    assert main(["sample", str(f), "--out", str(tmp_path / "x.nc")]) == 2
    assert "not an fsdiff checkpoint" in capsys.readouterr().err


def test_bad_config_key_names_the_key(tmp_path, capsys):
    assert main(["train", str(CONFIGS_DIR / "synthetic.toml"), "--set", "training.stepz=3", "--run-dir", str(tmp_path / "r")]) == 2
    assert "training.stepz" in capsys.readouterr().err


def test_export_round_trip(run_dir, tmp_path, capsys):
    from fsdiff.training import PRETRAINED_KIND, load_run

    out = tmp_path / "model.pt"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    ck = torch.load(out, weights_only=True)
    assert ck["kind"] == PRETRAINED_KIND and "optimizer" not in ck and "rng" not in ck and "ema" not in ck
    model, sde, grid, cfg = load_run(out)
    ref, _, _, _ = load_run(run_dir)  # EMA weights of the run
    for k, v in ref.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert main(["export", str(run_dir), "--out", str(out)]) == 2  # refuses to overwrite
    assert "--force" in capsys.readouterr().err
    before = out.read_bytes()
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(out), "--force"]) == 2
    assert out.read_bytes() == before  # a refused command changes nothing
    assert main(["sample", str(out), "--resolution", "16", "--n", "2", "--steps", "2", "--out", str(tmp_path / "p.nc"), "--quiet"]) == 0


def test_corrupted_or_foreign_pt_gets_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["sample", str(bad), "--out", str(tmp_path / "x.nc")]) == 2
    assert "not an fsdiff checkpoint" in capsys.readouterr().err
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    assert main(["export", str(foreign), "--out", str(tmp_path / "y.pt")]) == 2
    assert "not an fsdiff checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "y.pt").exists()


def test_superres_and_inpaint_commands(tmp_path, capsys, single_thread):
    """``fsdiff superres`` / ``inpaint`` on the shipped MNIST model: netCDF + PNG, exact coarse modes, clear errors."""
    import matplotlib.image as mpimg
    import numpy as np

    import fsdiff as fd
    from fsdiff._paths import PRETRAINED_DIR

    pre = str(PRETRAINED_DIR / "mnist.pt")
    yy, xx = np.mgrid[0:14, 0:14]
    coarse = np.exp(-((xx - 7) ** 2 / 4 + (yy - 7) ** 2 / 20))  # a blurred vertical stroke
    mpimg.imsave(tmp_path / "coarse.png", coarse, cmap="gray", vmin=0, vmax=1)
    out = tmp_path / "sr.nc"
    assert main(["superres", pre, "--input", str(tmp_path / "coarse.png"), "--resolution", "28", "--n", "2",
                 "--steps", "3", "--out", str(out), "--quiet"]) == 0
    assert out.exists() and out.with_suffix(".png").exists()
    s = torch.as_tensor(xr.open_dataset(out)["samples"].values)
    assert s.shape == (2, 1, 28, 28)
    obs = fd.resample(torch.as_tensor(mpimg.imread(tmp_path / "coarse.png")[..., :3].mean(-1), dtype=torch.float64)[None],
                      fd.Grid((14, 14)), fd.Grid((14, 14)))
    restricted = fd.resample(s.double(), fd.Grid((28, 28)), fd.Grid((14, 14)))
    assert float((restricted - fd.resample(fd.resample(obs, fd.Grid((14, 14)), fd.Grid((28, 28))), fd.Grid((28, 28)),
                                           fd.Grid((14, 14)))).abs().max()) < 1e-5
    img = np.kron(coarse, np.ones((2, 2)))
    mpimg.imsave(tmp_path / "img.png", img, cmap="gray", vmin=0, vmax=1)
    mask = np.zeros((28, 28))
    mask[:, :14] = 1
    mpimg.imsave(tmp_path / "mask.png", mask, cmap="gray", vmin=0, vmax=1)
    assert main(["inpaint", pre, "--input", str(tmp_path / "img.png"), "--mask", str(tmp_path / "mask.png"), "--n", "2",
                 "--steps", "3", "--out", str(tmp_path / "ip.nc"), "--quiet"]) == 0
    assert (tmp_path / "ip.png").exists()
    capsys.readouterr()
    assert main(["superres", pre, "--input", str(tmp_path / "img.png"), "--resolution", "14", "--out", str(tmp_path / "x.nc")]) == 2
    assert "finer than the target" in capsys.readouterr().err
    assert main(["inpaint", pre, "--input", str(tmp_path / "img.png"), "--mask", str(tmp_path / "coarse.png"),
                 "--out", str(tmp_path / "x.nc")]) == 2
    assert "has shape (14, 14)" in capsys.readouterr().err
    assert main(["superres", pre, "--input", str(tmp_path / "nope.png"), "--out", str(tmp_path / "x.nc")]) == 2
    assert not (tmp_path / "x.nc").exists()
