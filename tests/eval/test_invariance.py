"""The invariance harness end to end on a tiny run, and the white-noise opt-in of the SDEs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fsdiff as fd
from fsdiff._paths import CONFIGS_DIR
from fsdiff.config import load_config
from fsdiff.eval.invariance import BANDS, METRICS, evaluate_invariance
from fsdiff.training import train_from_config

TINY = [
    "grid.shape=[16,16]", "multilevel.levels=[]", 'multilevel.schedule="single"', "multilevel.fractions=[]",
    "model.channels=[8, 8, 8]", "model.modes=3", "model.stats_samples=64", "training.steps=2", "training.batch_size=4",
    "training.n_val=4", "training.eval_every=0", "training.checkpoint_every=0", "training.warmup_steps=0",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, single_thread_module):
    cfg = load_config(CONFIGS_DIR / "synthetic.toml", TINY)
    run = tmp_path_factory.mktemp("inv") / "run"
    train_from_config(cfg, run, progress=False)
    return run


def test_harness_end_to_end_writes_valid_netcdf(tiny_run, tmp_path):
    import xarray as xr

    out = tmp_path / "inv"
    ds = evaluate_invariance(tiny_run, [32, 8, 16], n_samples=4, steps=3, seed=1, out_dir=out, progress=False,
                             n_reference=6, n_projections=8)
    assert list(ds["resolution"].values) == [8, 16, 32]
    assert list(ds["metric"].values) == list(METRICS) and list(ds["band"].values) == list(BANDS)
    m = ds["metrics"]
    for name in ("val_loss", "energy_mmd", "sliced_wasserstein", "spectrum_error", "pointwise_w1", "vendi"):
        assert np.isfinite(m.sel(metric=name).values).all(), name
    assert np.isnan(m.sel(metric="classifier_frechet").values).all()  # not MNIST-like data
    # beyond-Nyquist band: empty at and below the training grid (16), present above it
    beyond = ds["band_error"].sel(band="beyond").values
    assert np.isnan(beyond[:2]).all() and np.isfinite(beyond[2])
    for f in ("invariance.nc", "invariance.png", "invariance.txt"):
        assert (out / f).is_file()
    back = xr.open_dataset(out / "invariance.nc", engine="scipy")
    np.testing.assert_allclose(back["metrics"].values, ds["metrics"].values, equal_nan=True)
    assert back.attrs["train_resolution"] == 16
    back.close()
    assert not list(out.glob(".tmp-*"))


def test_harness_is_reproducible_and_nested(tiny_run):
    kw = dict(n_samples=4, steps=2, seed=3, progress=False, n_reference=4, n_projections=4)
    a = evaluate_invariance(tiny_run, [16, 32], **kw)
    b = evaluate_invariance(tiny_run, [16, 32], **kw)
    np.testing.assert_array_equal(a["metrics"].values, b["metrics"].values)
    # the validation batch is the same functions at both grids: the loss differs only by discretisation
    v = a["metrics"].sel(metric="val_loss").values
    assert abs(v[0] - v[1]) < 0.2 * abs(v[1])


def test_harness_rejects_non_runs(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an fsdiff run"):
        evaluate_invariance(tmp_path, [8])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate_invariance(tmp_path / "missing", [8])
    with pytest.raises(ValueError, match="resolutions"):
        evaluate_invariance(tmp_path, [2])


def test_white_noise_needs_explicit_opt_in():
    g = fd.Grid((8, 8))
    x = torch.zeros(2, 1, 8, 8)
    strict = fd.VPSDE(fd.White())
    with pytest.raises(ValueError, match="not trace class"):
        strict.perturb(x, 0.5, g)
    with pytest.raises(ValueError, match="not trace class"):
        strict.prior_sample(g, 2)
    loose = fd.VPSDE(fd.White(sigma=0.125), allow_non_trace_class=True)
    xt, eta = loose.perturb(x, 0.5, g, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(xt).all()
    d = loose.to_dict()
    assert d["allow_non_trace_class"] is True and "allow_non_trace_class" not in strict.to_dict()
    assert fd.sde_from_dict(d).allow_non_trace_class
    ve = fd.VESDE(fd.White(), allow_non_trace_class=True)
    assert fd.sde_from_dict(ve.to_dict()).allow_non_trace_class

    from fsdiff.sampling import sample

    def zero(x, t, grid):
        return torch.zeros_like(x)

    with pytest.raises(ValueError, match="not trace class"):
        sample(zero, strict, g, 2, steps=2)
    y = sample(zero, loose, g, 2, steps=2, generator=torch.Generator().manual_seed(0))
    assert y.shape == (2, 1, 8, 8) and math.isfinite(float(y.abs().max()))


def test_band_powers_split_the_l2_norm():
    from fsdiff.eval.invariance import band_powers

    g = fd.Grid((32, 32))
    u = fd.Matern(alpha=2.0, tau=3.0).sample(g, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    p = band_powers(u, g, k_train=8)
    assert p.shape == (3,) and (p > 0).all()
    np.testing.assert_allclose(p.sum(), float(g.norm(u).square().mean()), rtol=1e-10)  # Parseval
    # a function on the training grid (16², K = 8) has no power beyond K
    v = fd.resample(u, g, fd.Grid((16, 16)))
    assert band_powers(v, fd.Grid((16, 16)), k_train=8)[2] == 0
