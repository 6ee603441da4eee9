"""Grid: coordinates, quadrature, Fourier resampling, subsampling, xarray I/O, input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
import torch

import fsdiff as fd


def _eval_modes(grid: fd.Grid, modes: list[tuple[tuple[int, ...], complex]]) -> torch.Tensor:
    """Real function ``sum_k 2 Re(c_k exp(2 pi i k.x / L))`` (plus ``Re c_0`` for k = 0) on the grid, float64."""
    x = grid.mesh().numpy().reshape(grid.ndim, -1) / np.array(grid.length)[:, None]  # (d, P) in units of L
    k = np.array([m[0] for m in modes], dtype=np.float64).reshape(len(modes), grid.ndim)
    c = np.array([m[1] for m in modes]) * np.where(np.any(k != 0, axis=1), 2.0, 1.0)
    u = (c[:, None] * np.exp(2j * np.pi * (k @ x))).sum(0).real
    return torch.from_numpy(u.reshape(grid.shape))


def _random_modes(K: tuple[int, ...], seed: int) -> list[tuple[tuple[int, ...], complex]]:
    """Random coefficients on a half-set of wavevectors with ``|k_i| <= K_i``."""
    rng = np.random.default_rng(seed)
    axes = [range(-k, k + 1) for k in K[:-1]] + [range(0, K[-1] + 1)]
    out = []
    for k in np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(K)):
        nz = np.nonzero(k)[0]
        if len(nz) and k[nz[-1]] < 0:  # keep one of each pair {k, -k}
            continue
        out.append((tuple(int(v) for v in k), complex(rng.normal(), rng.normal() if len(nz) else 0.0)))
    return out


# ----------------------------------------------------------------------------- coordinates
def test_coords_vertex_centred_non_square_non_unit():
    g = fd.Grid((8, 6), length=(2.0, 3.0))
    assert g.shape == (8, 6) and g.ndim == 2 and g.length == (2.0, 3.0)
    torch.testing.assert_close(g.coords[0], torch.arange(8, dtype=torch.float64) * 0.25)
    torch.testing.assert_close(g.coords[1], torch.arange(6, dtype=torch.float64) * 0.5)
    assert g.coords[0][0] == 0.0 and g.coords[0][-1] < 2.0  # [0, L): the end point is not a vertex
    assert g.volume == pytest.approx(6.0) and g.cell_volume == pytest.approx(0.25 * 0.5)
    assert g.mesh().shape == (2, 8, 6)
    # a coarse grid's points are every other fine point
    torch.testing.assert_close(fd.Grid((4, 3), (2.0, 3.0)).coords[1], g.coords[1][::2])


def test_scalar_shape_and_length():
    g = fd.Grid(16, length=2.0)
    assert g.shape == (16,) and g.length == (2.0,)
    assert fd.Grid((4, 4, 4)).length == (1.0, 1.0, 1.0)


# ------------------------------------------------------------------------------ quadrature
@pytest.mark.parametrize(
    "shape,length",
    [((8,), 1.0), ((33,), 2.5), ((128,), 0.3), ((16, 16), 1.0), ((32, 12), (2.0, 3.0)), ((9, 7, 10), (1.0, 2.0, 0.5))],
)
def test_norm_of_sine_is_half_volume(shape, length):
    g = fd.Grid(shape, length)
    x = g.mesh()
    for axis in range(g.ndim):  # sin(2 pi x_i / L_i) along every axis
        u = torch.sin(2 * math.pi * x[axis] / g.length[axis])[None, None]
        assert float(g.norm(u) ** 2) == pytest.approx(g.volume / 2, rel=1e-12)


def test_inner_converges_spectrally():
    # int_0^1 exp(2 cos 2 pi x) dx = I_0(2); trapezoid is spectrally accurate on periodic data
    exact = float(scipy.special.i0(2.0))
    errs = []
    for n in (4, 8, 16, 32):
        g = fd.Grid(n)
        u = torch.exp(torch.cos(2 * math.pi * g.coords[0]))[None, None]
        errs.append(abs(float(g.inner(u, u)) - exact))
    assert errs[0] > 1e-3  # coarse grid is visibly wrong, so the test can fail
    assert all(b < a for a, b in zip(errs, errs[1:]))
    assert errs[-1] < 1e-13


def test_inner_batch_shape_and_symmetry(gen):
    g = fd.Grid((12, 10), (1.0, 2.0))
    u, v = torch.randn(3, 2, 12, 10, generator=gen), torch.randn(3, 2, 12, 10, generator=gen)
    ip = g.inner(u, v)
    assert ip.shape == (3,)
    torch.testing.assert_close(ip, g.inner(v, u))
    torch.testing.assert_close(g.norm(u) ** 2, g.inner(u, u))
    torch.testing.assert_close(ip, (u * v).sum((1, 2, 3)) * (2.0 / 120))


# ------------------------------------------------------------------------------ resampling
@pytest.mark.parametrize(
    "fine,coarse,length",
    [((64,), (9,), 2.0), ((64,), (16,), 1.0), ((32, 24), (11, 8), (2.0, 3.0)), ((30, 31), (15, 16), (1.0, 1.0)),
     ((16, 12, 10), (7, 8, 5), (1.0, 2.0, 1.5))],
)
def test_resample_exact_on_band_limited(fine, coarse, length):
    gf, gc = fd.Grid(fine, length), fd.Grid(coarse, length)
    modes = _random_modes(gc.max_modes, seed=1)  # band-limited to the coarse grid's kept modes
    uf, uc = _eval_modes(gf, modes)[None, None], _eval_modes(gc, modes)[None, None]
    torch.testing.assert_close(fd.resample(uf, gf, gc), uc, atol=1e-11, rtol=0)
    torch.testing.assert_close(fd.resample(uc, gc, gf), uf, atol=1e-11, rtol=0)


@pytest.mark.parametrize("fine,coarse", [((64,), (21,)), ((32, 24), (15, 9)), ((12, 10, 14), (5, 7, 9))])
def test_coarse_fine_coarse_is_identity(fine, coarse, gen):
    gf, gc = fd.Grid(fine), fd.Grid(coarse)  # odd coarse grids keep every mode their data holds
    u = torch.randn(2, 3, *coarse, generator=gen, dtype=torch.float64)
    back = fd.resample(fd.resample(u, gc, gf), gf, gc)
    torch.testing.assert_close(back, u, atol=1e-12, rtol=0)
    # float32 keeps its dtype
    assert fd.resample(u.float(), gc, gf).dtype == torch.float32


def test_even_coarse_grid_drops_nyquist(gen):
    gc, gf = fd.Grid(8), fd.Grid(32)
    nyq = torch.cos(math.pi * 8 * gc.coords[0])[None]  # (-1)^j: the Nyquist mode of 8 points
    assert float(fd.resample(nyq, gc, gf).abs().max()) < 1e-12


@pytest.mark.parametrize("fine,coarse,length", [((48,), (16,), 1.0), ((40, 36), (13, 10), (1.0, 2.0))])
def test_fine_to_coarse_truncates_to_kept_modes(fine, coarse, length):
    gf, gc = fd.Grid(fine, length), fd.Grid(coarse, length)
    modes = _random_modes(tuple(m - 1 for m in gf.max_modes), seed=2)  # rich content on the fine grid
    kept = [(k, c) for k, c in modes if all(abs(ki) <= K for ki, K in zip(k, gc.max_modes))]
    assert len(kept) < len(modes)
    out = fd.resample(_eval_modes(gf, modes)[None], gf, gc)
    torch.testing.assert_close(out, _eval_modes(gc, kept)[None], atol=1e-10, rtol=0)


def test_resample_rejects_mismatches(gen):
    g = fd.Grid((16, 16))
    with pytest.raises(ValueError, match="different domains"):
        fd.resample(torch.zeros(1, 16, 16), g, fd.Grid((8, 8), length=2.0))
    with pytest.raises(ValueError, match="1-D"):
        fd.resample(torch.zeros(1, 16, 16), g, fd.Grid(8))
    with pytest.raises(ValueError) as e:
        fd.resample(torch.zeros(1, 1, 12, 16), g, fd.Grid((8, 8)))
    assert "(1, 1, 12, 16)" in str(e.value) and "16, 16" in str(e.value)


# ------------------------------------------------------------------------------ subsample
def test_subsample_lands_on_the_same_points():
    g = fd.Grid((16, 12), (2.0, 3.0))
    x = g.mesh()
    u = (torch.sin(x[0]) * torch.cos(3 * x[1]))[None, None]
    v, gc = fd.subsample(u, g, (2, 3))
    assert gc == fd.Grid((8, 4), (2.0, 3.0)) and v.shape == (1, 1, 8, 4)
    xc = gc.mesh()
    torch.testing.assert_close(v, (torch.sin(xc[0]) * torch.cos(3 * xc[1]))[None, None])
    v2, g2 = fd.subsample(u, g, 2)
    assert g2.shape == (8, 6)
    torch.testing.assert_close(v2, u[..., ::2, ::2])


def test_subsample_bad_input():
    g = fd.Grid((16, 12))
    u = torch.zeros(1, 16, 12)
    with pytest.raises(ValueError, match="divisible"):
        fd.subsample(u, g, 5)
    with pytest.raises(ValueError, match="positive"):
        fd.subsample(u, g, 0)
    with pytest.raises(ValueError, match="one per axis"):
        fd.subsample(u, g, (2, 2, 2))


# --------------------------------------------------------------------------------- xarray
@pytest.mark.parametrize("shape,length", [((10,), 2.0), ((8, 6), (2.0, 3.0)), ((4, 5, 6), (1.0, 0.5, 2.0))])
def test_xarray_round_trip(shape, length, gen):
    g = fd.Grid(shape, length)
    u = torch.randn(3, 2, *shape, generator=gen)
    da = fd.to_dataarray(u, g, name="field", attrs={"covariance": "matern"})
    assert da.dims == ("sample", "channel") + ("x", "y", "z")[: len(shape)]
    np.testing.assert_allclose(da["x"].values, g.coords[0].numpy())
    assert da.attrs["covariance"] == "matern"
    v, g2 = fd.from_dataarray(da)
    assert g2 == g and torch.equal(v, u)
    # without the length attribute the grid is inferred from the vertex-centred coordinates
    del da.attrs["length"]
    _, g3 = fd.from_dataarray(da)
    assert g3.shape == g.shape and np.allclose(g3.length, g.length)


def test_xarray_bad_input():
    g = fd.Grid((8, 6))
    with pytest.raises(ValueError):
        fd.to_dataarray(torch.zeros(8, 6), g)  # no sample/channel dims
    with pytest.raises(ValueError, match="dims"):
        fd.from_dataarray(fd.to_dataarray(torch.zeros(1, 1, 8, 6), g).transpose("x", "sample", "channel", "y"))


# ------------------------------------------------------------------------------ checking
def test_shape_mismatch_names_both_shapes():
    g = fd.Grid((16, 16))
    with pytest.raises(ValueError) as e:
        g.norm(torch.zeros(2, 1, 16, 8))
    msg = str(e.value)
    assert "(2, 1, 16, 8)" in msg and "16, 16" in msg
    with pytest.raises(ValueError, match="shapes differ"):
        g.inner(torch.zeros(2, 1, 16, 16), torch.zeros(3, 1, 16, 16))
    with pytest.raises(TypeError):
        g.norm(np.zeros((1, 1, 16, 16)))


def test_non_finite_check():
    g = fd.Grid(8)
    u = torch.zeros(1, 1, 8)
    assert g.check(u, finite=True) is u
    for bad in (math.nan, math.inf):
        u[0, 0, 3] = bad
        with pytest.raises(ValueError, match="non-finite"):
            g.check(u, finite=True)


@pytest.mark.parametrize(
    "shape,length",
    [((8,), 0.0), ((8,), -1.0), ((8,), math.nan), ((8,), math.inf), ((8, 8), (1.0,)), ((8, 8), (1.0, 2.0, 3.0)),
     ((1,), 1.0), ((2, 2, 2, 2), 1.0), ((), 1.0)],
)
def test_bad_grids_raise(shape, length):
    with pytest.raises(ValueError):
        fd.Grid(shape, length)


def test_grid_equality_and_dict():
    g = fd.Grid((8, 6), (2.0, 3.0))
    assert g == fd.Grid.from_dict(g.to_dict()) and hash(g) == hash(fd.Grid((8, 6), (2.0, 3.0)))
    assert g != fd.Grid((8, 6)) and g.with_shape(4) == fd.Grid((4, 4), (2.0, 3.0))
    assert g.max_modes == (3, 2) and fd.Grid(9).max_modes == (4,)
    assert int(g.mode_mask.sum()) == 7 * 3  # k_1 in -3..3, k_2 in 0..2
