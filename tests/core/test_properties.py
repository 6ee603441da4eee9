"""Property-based tests (issue 13): grids, resampling, nesting, covariance parameters, config overrides.

Each property is checked on a few dozen random cases drawn by ``hypothesis`` (derandomised, so a
CI failure reproduces); the closed forms are the definitions in ``docs/conventions``: ``h = L / N``,
kept modes ``|k_i| <= (N_i - 1) // 2``, restriction / prolongation exact on band-limited functions.
"""

from __future__ import annotations

import math

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fsdiff as fd  # noqa: E402
from fsdiff.config import load_config  # noqa: E402
from fsdiff.errors import ConfigError, GridError  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread_module")
SETTINGS = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

sizes = st.integers(min_value=2, max_value=40)
lengths = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False, allow_infinity=False)


@SETTINGS
@given(shape=st.lists(sizes, min_size=1, max_size=3), data=st.data())
def test_grid_shapes_and_lengths(shape, data):
    length = data.draw(st.lists(lengths, min_size=len(shape), max_size=len(shape)))
    g = fd.Grid(shape, length)
    assert g.shape == tuple(shape) and g.ndim == len(shape)
    assert g.length == pytest.approx(tuple(length))
    assert g.spacing == pytest.approx(tuple(L / n for L, n in zip(length, shape)))
    assert g.volume == pytest.approx(math.prod(length))
    assert g.cell_volume == pytest.approx(math.prod(length) / math.prod(shape))
    assert g.max_modes == tuple((n - 1) // 2 for n in shape)
    assert g.rfft_shape == tuple(shape[:-1]) + (shape[-1] // 2 + 1,)
    assert int(g.mode_mask.sum()) == math.prod(2 * K + 1 for K in g.max_modes[:-1]) * (g.max_modes[-1] + 1)
    assert fd.Grid.from_dict(g.to_dict()) == g


@SETTINGS
@given(bad=st.one_of(st.floats(allow_nan=True).filter(lambda v: not float(v).is_integer()),
                     st.text(max_size=3), st.booleans()))
def test_grid_refuses_non_integer_sizes(bad):
    with pytest.raises(GridError, match="whole numbers"):
        fd.Grid((bad, 8))


@SETTINGS
@given(n=st.integers(-5, 1), ndim=st.integers(1, 3))
def test_grid_refuses_fewer_than_two_points(n, ndim):
    with pytest.raises(ValueError, match="at least 2 points"):
        fd.Grid((8,) * (ndim - 1) + (n,))


def _band_limited(grid: fd.Grid, seed: int) -> torch.Tensor:
    """A random real function on ``grid`` holding only its kept modes (Nyquist removed)."""
    u = torch.randn((2, 1, *grid.shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return grid.irfft(grid.rfft(u) * grid.mode_mask)


@SETTINGS
@given(coarse=st.lists(st.integers(2, 16), min_size=1, max_size=2), data=st.data(), seed=st.integers(0, 2**16))
def test_resample_round_trip_on_band_limited_functions(coarse, data, seed):
    factors = data.draw(st.lists(st.integers(1, 4), min_size=len(coarse), max_size=len(coarse)))
    gc = fd.Grid(coarse, 2.0)
    gf = fd.Grid([n * f for n, f in zip(coarse, factors)], 2.0)
    u = _band_limited(gc, seed)
    up = fd.resample(u, gc, gf)
    torch.testing.assert_close(fd.resample(up, gf, gc), u, rtol=0, atol=1e-12)
    # vertex-centred points: the fine function at the coarse points is the coarse function
    sub, _ = fd.subsample(up, gf, factors)
    torch.testing.assert_close(sub, u, rtol=0, atol=1e-12)
    # Parseval: the L2 norm is the same on both grids
    torch.testing.assert_close(gf.norm(up), gc.norm(u), rtol=1e-10, atol=1e-12)


@SETTINGS
@given(coarse=st.lists(st.integers(2, 12), min_size=1, max_size=2), data=st.data(), seed=st.integers(0, 2**16))
def test_noise_is_nested_for_random_grid_pairs(coarse, data, seed):
    extra = data.draw(st.lists(st.integers(0, 12), min_size=len(coarse), max_size=len(coarse)))
    gc, gf = fd.Grid(coarse), fd.Grid([n + e for n, e in zip(coarse, extra)])
    cov = fd.Matern(alpha=2.0, tau=5.0)
    fine = cov.sample(gf, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    crs = cov.sample(gc, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    torch.testing.assert_close(fd.resample(fine, gf, gc), crs, rtol=0, atol=1e-12)


positive = st.floats(min_value=1e-3, max_value=1e3)
invalid = st.sampled_from([0.0, -1.0, -1e-9, float("nan"), float("inf"), -float("inf")])


@SETTINGS
@given(alpha=st.floats(1.01, 6.0), tau=positive, sigma=positive, power=st.floats(1.01, 6.0), ell=st.floats(1e-2, 0.3))  # wider: exp(-l² ω² / 2) underflows float64
def test_valid_covariance_parameters_give_finite_positive_eigenvalues(alpha, tau, sigma, power, ell):
    g = fd.Grid((12, 10))
    for cov in (fd.Matern(alpha, tau, sigma), fd.SquaredExponential(ell, sigma), fd.White(sigma)):
        lam = cov.eigenvalues(g)
        assert torch.isfinite(lam).all() and (lam[g.mode_mask] > 0).all()
    lam = fd.LaplacianPower(power).eigenvalues(g)  # the constant mode is the only zero
    assert torch.isfinite(lam).all() and (lam[g.mode_mask] >= 0).all() and int((lam[g.mode_mask] == 0).sum()) == 1


@SETTINGS
@given(bad=invalid, which=st.integers(0, 5))
def test_invalid_covariance_parameters_raise(bad, which):
    make = [lambda v: fd.Matern(alpha=v), lambda v: fd.Matern(tau=v), lambda v: fd.Matern(sigma=v),
            lambda v: fd.SquaredExponential(lengthscale=v), lambda v: fd.LaplacianPower(power=v),
            lambda v: fd.White(sigma=v)][which]
    with pytest.raises(ValueError, match="must be a finite positive number"):
        make(bad)


KEYS = ["grid.shape", "grid.length", "sde.type", "sde.beta_max", "sde.covariance.alpha", "sde.covariance.type",
        "model.width", "model.modes", "model.type", "training.steps", "training.lr", "training.batch_size",
        "training.time_sampling", "data.type", "multilevel.levels", "nonsense.key", "training.stepz", "grid"]
VALUES = st.one_of(st.integers(-5, 100), st.floats(allow_nan=False, width=32), st.booleans(),
                   st.sampled_from(['"vp"', '"matern"', '"edm"', '"fno_score"', "[16, 16]", "[8, 16]", '"x"', "[]",
                                    "{a = 1}", "nan", "inf", "-1", "0", '""', "[1.5, 2]"]))


@SETTINGS
@given(items=st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=3))
def test_config_overrides_give_a_config_or_a_message_naming_the_key(items):
    overrides = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in items]
    try:
        cfg = load_config(None, overrides)
    except ConfigError as e:
        msg = str(e)
        assert any(k.split(".")[0] in msg for k, _ in items), msg
        return
    assert cfg.training.steps >= 1 and cfg.training.lr > 0 and all(n >= 1 for n in cfg.grid.shape)
