"""fsdiff.app.generate and the demo helpers: resolutions, output names, sampling a model to files."""

from __future__ import annotations

import pytest
import torch
import xarray as xr

import fsdiff as fd
from fsdiff.app.demo import band_ratios, format_demo_table
from fsdiff.app.generate import output_paths, parse_resolution, sample_run

pytestmark = pytest.mark.usefixtures("single_thread")


def test_parse_resolution():
    assert parse_resolution("64", 2) == (64, 64)
    assert parse_resolution(32, 1) == (32,)
    assert parse_resolution("64x32", 2) == (64, 32)
    for bad, nd in (("abc", 2), ("64x32", 1), ("1", 2)):
        with pytest.raises(ValueError):
            parse_resolution(bad, nd)


def test_output_paths(tmp_path):
    assert output_paths(tmp_path / "s.nc", [(16, 16)]) == [tmp_path / "s.nc"]
    assert output_paths(tmp_path / "s.nc", [(16, 16), (32, 16)]) == [tmp_path / "s_16.nc", tmp_path / "s_32x16.nc"]
    with pytest.raises(ValueError, match=".nc"):
        output_paths(tmp_path / "s.png", [(16, 16)])


def test_sample_run_writes_netcdf_and_png_and_reports_the_scheme(tmp_path):
    sde = fd.VPSDE(fd.Matern(alpha=2.0, tau=3.0, sigma=8.0))
    oracle = fd.GaussianScore(sde, fd.Matern(alpha=2.5, tau=5.0, sigma=30.0))
    g = fd.Grid((8, 8))
    xs, info = sample_run(oracle, sde, g, [(8, 8), (16, 16)], 3, 1, steps=2, seed=4, out=tmp_path / "s.nc",
                          progress=False, cmap="gray")
    assert info["sampler"] == "ode" and info["nfe"] == 2 * 2 + 1  # auto: Heun + the Tweedie step
    assert set(info["seconds"]) == {(8, 8), (16, 16)}
    assert xs[(16, 16)].shape == (3, 1, 16, 16)
    # one seed at both resolutions: the mode-diagonal oracle keeps the 8² modes of the 16² run
    torch.testing.assert_close(fd.resample(xs[(16, 16)], fd.Grid((16, 16)), g), xs[(8, 8)], atol=1e-4, rtol=0)
    for name in ("s_8", "s_16"):
        assert (tmp_path / f"{name}.png").exists()
        with xr.open_dataset(tmp_path / f"{name}.nc", engine="scipy") as ds:
            assert ds["samples"].attrs["sampler"] == "ode" and int(ds["samples"].attrs["nfe"]) == 5


def test_band_ratios_closed_form():
    g = fd.Grid((16, 16))
    truth = fd.Matern(alpha=2.0, tau=3.0).sample(g, 8, generator=torch.Generator().manual_seed(0))
    r = band_ratios(2 * truth, truth, g, K=5)  # the 16² grid holds |k| <= 7: all three bands
    assert set(r) == {"low", "mid", "beyond"}
    assert all(v == pytest.approx(4.0) for v in r.values())  # power scales with the square
    table = format_demo_table({"metrics": {"16": {"energy_mmd": 0.1, "spectrum_error": 0.2, "pointwise_value_w1": 0.3,
                                                   "band_power_ratio": r}}})
    assert "16" in table.splitlines()[1] and "4.00" in table
