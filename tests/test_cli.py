"""CLI round trip: train a tiny model, sample at two resolutions, read the netCDF back."""

import json

import pytest
import torch
import xarray as xr

from fsdiff.cli import main

TINY = [
    "training.steps=4", "training.batch_size=4", "training.eval_every=2", "training.checkpoint_every=2",
    "training.n_val=4", "model.width=8", "model.n_layers=1", "model.modes=[3, 3]", 'model.output="whitened"',
    "grid.shape=[16, 16]", "multilevel.levels=[8, 16]",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("cli") / "run"
    args = ["train", "configs/synthetic.toml", "--run-dir", str(d), "--quiet"]
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
        assert da.attrs["sampler"] == "em" and int(da.attrs["seed"]) == 5 and int(da.attrs["steps"]) == 3
        assert json.loads(da.attrs["model"])["type"] == "q_coloured"
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
    assert main(["train", "configs/synthetic.toml", "--set", "training.stepz=3", "--run-dir", str(tmp_path / "r")]) == 2
    assert "training.stepz" in capsys.readouterr().err
