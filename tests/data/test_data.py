"""Tests of fsdiff.data: IDX readers, checksums, download (local server only), resolution protocol,
synthetic fields nested across resolutions, Darcy convergence, plain-data round trips."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import fsdiff as fd
from fsdiff.data import (
    MNIST,
    MNIST_GRID,
    DarcyFlow,
    GaussianRandomField,
    LogNormalField,
    ThresholdedField,
    band_limited_sample,
    dataset_from_dict,
    load_mnist,
    mnist_on_grid,
    read_idx,
    solve_darcy,
    verify_file,
)
from fsdiff.data import mnist as mnist_mod

DATA_DIR = Path(os.environ.get("FSDIFF_DATA_DIR", "/work/shared/data"))
HAVE_MNIST = (DATA_DIR / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()
HAVE_FASHION = (DATA_DIR / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").is_file()
needs_mnist = pytest.mark.skipif(not HAVE_MNIST, reason=f"MNIST files not found in {DATA_DIR}/mnist (set FSDIFF_DATA_DIR)")
needs_fashion = pytest.mark.skipif(
    not HAVE_FASHION, reason=f"Fashion-MNIST files not found in {DATA_DIR}/fashion-mnist (set FSDIFF_DATA_DIR)"
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- fake IDX files
def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + np.array(arr.shape, dtype=">u4").tobytes()
    return header + arr.astype(np.uint8).tobytes()


def write_fake_split(folder: Path, split: str = "test", n: int = 5, seed: int = 0, sums: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Write a fake split (gzip IDX) and a SHA256SUMS; return the arrays."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    img_name, lab_name = mnist_mod.mnist_files(split)
    lines = []
    for name, arr in ((img_name, images), (lab_name, labels)):
        data = gzip.compress(idx_bytes(arr))
        (folder / name).write_bytes(data)
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {name}")
    if sums:
        (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return images, labels


# --------------------------------------------------------------------------- real files
@needs_mnist
def test_mnist_test_split_shapes_and_ranges():
    x, y = load_mnist("test", DATA_DIR)
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (10000,) and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert int(y.min()) == 0 and int(y.max()) == 9
    assert torch.bincount(y, minlength=10).min() > 800  # every digit present
    assert 0.1 < float(x.mean()) < 0.15  # MNIST mean intensity ~0.13
    labels_file = DATA_DIR / "mnist" / "t10k-labels-idx1-ubyte.gz"
    assert verify_file(labels_file) == mnist_mod.OFFICIAL_SHA256["mnist"][labels_file.name]


@needs_mnist
def test_mnist_train_first_label_and_limit(monkeypatch):
    monkeypatch.setenv("FSDIFF_DATA_DIR", str(DATA_DIR))
    x, y = load_mnist("train")  # root from the environment variable
    assert x.shape == (60000, 1, 28, 28) and y.shape == (60000,)
    assert int(y[0]) == 5 and y[:5].tolist() == [5, 0, 4, 1, 9]
    xs, ys = load_mnist("train", limit=7)
    assert xs.shape == (7, 1, 28, 28)
    assert torch.equal(xs, x[:7]) and torch.equal(ys, y[:7])


@needs_fashion
def test_fashion_mnist_test_split():
    x, y = load_mnist("test", DATA_DIR, kind="fashion-mnist")
    assert x.shape == (10000, 1, 28, 28) and y.shape == (10000,)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert torch.equal(torch.bincount(y, minlength=10), torch.full((10,), 1000))  # balanced classes


@needs_mnist
def test_corrupted_copy_fails_checksum_naming_file_and_hashes(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in mnist_mod.mnist_files("test") + ("SHA256SUMS",):
        shutil.copy(DATA_DIR / "mnist" / name, folder / name)
    load_mnist("test", tmp_path, limit=3)  # the intact copy verifies
    path = folder / "t10k-images-idx3-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(1, 1))  # a different mtime invalidates the cached digest
    with pytest.raises(ValueError, match="checksum mismatch") as err:
        load_mnist("test", tmp_path)
    msg = str(err.value)
    assert "t10k-images-idx3-ubyte.gz" in msg
    assert hashlib.sha256(bytes(data)).hexdigest() in msg
    assert "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6" in msg


def test_verification_is_cached_per_path_and_mtime(tmp_path, monkeypatch):
    write_fake_split(tmp_path / "mnist")
    load_mnist("test", tmp_path)
    calls = []
    real = mnist_mod.hashlib.sha256
    monkeypatch.setattr(mnist_mod.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    load_mnist("test", tmp_path)
    assert calls == []  # cached: no re-hash
    path = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(5, np.uint8))))
    os.utime(path, ns=(2, 2))
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_mnist("test", tmp_path)
    assert calls  # the changed file was hashed again


def test_truncated_and_malformed_files_give_clear_errors(tmp_path):
    images, labels = write_fake_split(tmp_path / "mnist", n=4)
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    full = path.read_bytes()
    # truncated gzip stream
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(ValueError, match="corrupted or truncated gzip"):
        load_mnist("test", tmp_path, verify=False)
    # valid gzip, payload shorter than the header declares
    path.write_bytes(gzip.compress(idx_bytes(images)[:-100]))
    with pytest.raises(ValueError, match="truncated IDX data"):
        load_mnist("test", tmp_path, verify=False)
    # trailing garbage
    path.write_bytes(gzip.compress(idx_bytes(images) + b"xx"))
    with pytest.raises(ValueError, match="trailing data"):
        load_mnist("test", tmp_path, verify=False)
    # a labels file where images are expected
    path.write_bytes(gzip.compress(idx_bytes(labels)))
    with pytest.raises(ValueError, match="1 dimensions, expected 3"):
        load_mnist("test", tmp_path, verify=False)
    # bad magic
    path.write_bytes(gzip.compress(b"\x01\x02\x08\x03" + idx_bytes(images)[4:]))
    with pytest.raises(ValueError, match="bad IDX magic"):
        load_mnist("test", tmp_path, verify=False)
    # intact file parses
    path.write_bytes(gzip.compress(idx_bytes(images)))
    x, y = load_mnist("test", tmp_path, verify=False)
    assert torch.equal(x[:, 0], torch.from_numpy(images).float() / 255)
    assert torch.equal(y, torch.from_numpy(labels).long())
    assert read_idx(path, ndim=3, limit=2).shape == (2, 28, 28)


def test_missing_file_and_missing_root_errors(tmp_path, monkeypatch):
    (tmp_path / "mnist").mkdir()
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.gz") as err:
        load_mnist("test", tmp_path)
    assert "download=True" in str(err.value)
    monkeypatch.delenv("FSDIFF_DATA_DIR", raising=False)
    with pytest.raises(ValueError, match="FSDIFF_DATA_DIR"):
        load_mnist("test")
    with pytest.raises(ValueError, match="unknown kind"):
        load_mnist("test", tmp_path, kind="cifar")
    with pytest.raises(ValueError, match="unknown split"):
        load_mnist("valid", tmp_path)


def test_without_sha256sums_official_hashes_are_used(tmp_path):
    write_fake_split(tmp_path / "mnist", sums=False)
    with pytest.raises(ValueError, match="official mnist checksums"):
        load_mnist("test", tmp_path)
    x, _ = load_mnist("test", tmp_path, verify=False)
    assert x.shape == (5, 1, 28, 28)


# --------------------------------------------------------------------------- download (local server)
@pytest.fixture
def local_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_download_from_local_server(tmp_path, local_server):
    served, url = local_server
    images, labels = write_fake_split(served, n=3)
    root = tmp_path / "root"
    (root / "mnist").mkdir(parents=True)
    shutil.copy(served / "SHA256SUMS", root / "mnist" / "SHA256SUMS")
    x, y = load_mnist("test", root, download=True, base_url=url)
    assert torch.equal(x[:, 0], torch.from_numpy(images).float() / 255)
    assert torch.equal(y, torch.from_numpy(labels).long())
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(
        ["SHA256SUMS", *mnist_mod.mnist_files("test")]
    )


def test_download_rejects_bad_content_atomically(tmp_path, local_server):
    served, url = local_server
    write_fake_split(served, n=3)
    root = tmp_path / "root"
    (root / "mnist").mkdir(parents=True)
    shutil.copy(served / "SHA256SUMS", root / "mnist" / "SHA256SUMS")
    (served / "t10k-images-idx3-ubyte.gz").write_bytes(b"not the file")
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_mnist("test", root, download=True, base_url=url)
    assert not (root / "mnist" / "t10k-images-idx3-ubyte.gz").exists()
    assert not list((root / "mnist").glob("*.part"))
    (served / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(OSError, match="could not download .*t10k-images"):
        load_mnist("test", root, download=True, base_url=url)
    assert not list((root / "mnist").glob("*.part"))


# --------------------------------------------------------------------------- resolution protocol
def _project28(x: torch.Tensor) -> torch.Tensor:
    return MNIST_GRID.irfft(MNIST_GRID.rfft(x) * MNIST_GRID.mode_mask)


@needs_mnist
def test_mnist_resampling_is_projection_on_kept_modes():
    x, _ = load_mnist("test", DATA_DIR, limit=8)
    g56 = fd.Grid((56, 56))
    up = mnist_on_grid(x, g56, band_limit=False)
    back = fd.resample(up, g56, MNIST_GRID)
    proj = _project28(x)
    assert torch.allclose(back, proj, atol=1e-5)
    # only the dropped Nyquist row/column separates the projection from the raw pixels
    nyq = MNIST_GRID.rfft(x - proj)
    assert float((nyq * MNIST_GRID.mode_mask).abs().max()) < 1e-6
    assert float((x - proj).abs().max()) > 1e-3  # the Nyquist content is real, and dropped
    # upsampling interpolates: the 28 points of the 56-grid carry the projected values
    assert torch.allclose(up[..., ::2, ::2], proj, atol=1e-5)
    # band_limit=True: the 28-grid image is the projection, so resolutions nest exactly
    ds = MNIST("test", root=DATA_DIR, limit=50)
    a28 = ds.sample(MNIST_GRID, 6, gen(3))
    a56 = ds.sample(g56, 6, gen(3))
    assert torch.allclose(fd.resample(a56, g56, MNIST_GRID), a28, atol=1e-5)
    assert torch.allclose(a56[..., ::2, ::2], a28, atol=1e-5)


@needs_mnist
def test_mnist_dataset_interface_and_round_trip():
    ds = MNIST("test", root=DATA_DIR, limit=100, digits=[3, 7])
    assert set(ds.labels.tolist()) <= {3, 7} and len(ds) == len(ds.labels)
    g = fd.Grid((32, 32))
    s = ds.sample(g, 5, gen(1))
    assert s.shape == (5, 1, 32, 32) and s.dtype == torch.float32 and ds.channels == 1
    assert torch.equal(s, ds.sample(g, 5, gen(1)))
    m = ds.materialize(g, len(ds), seed=2)
    assert m.shape == (len(ds), 1, 32, 32)
    # without replacement: every image exactly once
    full = ds.get(slice(None), g)[0]
    assert torch.allclose(m.sum(0), full.sum(0), atol=1e-3)
    with pytest.raises(ValueError, match="distinct images"):
        ds.materialize(g, len(ds) + 1)
    spec = json.loads(json.dumps(ds.to_dict()))
    ds2 = dataset_from_dict(spec)
    assert isinstance(ds2, MNIST) and ds2.to_dict() == ds.to_dict()
    assert torch.equal(ds2.sample(g, 5, gen(1)), s)
    with pytest.raises(ValueError, match="unit square"):
        mnist_on_grid(ds.get([0])[0], fd.Grid((32, 32), length=2.0))


# --------------------------------------------------------------------------- synthetic fields
def test_grf_is_fourier_nested_and_exact():
    C = fd.Matern(alpha=2.0, tau=3.0, sigma=5.0)
    ds = GaussianRandomField(C, mean=0.5, channels=2)
    fine, coarse = fd.Grid((128, 128)), fd.Grid((32, 32))
    u_f = ds.sample(fine, 4, gen(7)).double()
    u_c = ds.sample(coarse, 4, gen(7)).double()
    assert u_f.shape == (4, 2, 128, 128) and ds.channels == 2
    assert torch.allclose(fd.resample(u_f, fine, coarse), u_c, atol=1e-5)
    assert not torch.allclose(ds.sample(coarse, 4, gen(8)).double(), u_c, atol=1e-2)
    # the law: mean 0.5, pointwise variance as given by the covariance
    many = ds.sample(coarse, 400, gen(0)).double()
    assert abs(float(many.mean()) - 0.5) < 0.1
    assert abs(float(many.var()) / ds.pointwise_variance(coarse) - 1) < 0.1
    with pytest.raises(ValueError, match="not trace class"):
        GaussianRandomField(fd.White()).sample(coarse, 1, gen())


def test_band_limited_field_is_pointwise_nested_and_exact_evaluation():
    C = fd.Matern(alpha=1.5, tau=2.0, sigma=3.0)
    K = 8
    g128 = band_limited_sample(C, fd.Grid((128, 128)), 3, K, generator=gen(5))
    for N in (64, 32, 16, 8):  # 16 and 8 are below the band limit 2K+1 = 17: aliased, still exact
        gN = band_limited_sample(C, fd.Grid((N, N)), 3, K, generator=gen(5))
        f = 128 // N
        assert torch.allclose(g128[..., ::f, ::f], gN, atol=1e-12)
    # above the band limit, point evaluation equals Fourier interpolation of the band grid draw
    band = fd.Grid((2 * K + 1, 2 * K + 1))
    s = C.sample(band, 3, generator=gen(5), dtype=torch.float64)
    assert torch.allclose(fd.resample(s, band, fd.Grid((128, 128))), g128, atol=1e-12)
    g0 = band_limited_sample(C, fd.Grid((32, 32)), 3, K, generator=gen(5), zero_mean=True)
    assert float(g0.mean(dim=(-2, -1)).abs().max()) < 1e-12
    assert torch.allclose(g0 + g128[..., ::4, ::4].mean(dim=(-2, -1), keepdim=True), g128[..., ::4, ::4], atol=1e-12)
    ds = GaussianRandomField(C, max_mode=K)
    assert torch.allclose(ds.sample(fd.Grid((8, 8)), 3, gen(5)).double(), g128[..., ::16, ::16], atol=1e-5)


def test_log_normal_nested_pointwise_and_standardised():
    C = fd.Matern(alpha=2.0, tau=3.0, sigma=4.0)
    ds = LogNormalField(C, mean=0.3, max_mode=16)
    u128 = ds.sample(fd.Grid((128, 128)), 4, gen(11))
    u32 = ds.sample(fd.Grid((32, 32)), 4, gen(11))
    assert (u32 > 0).all()
    assert torch.allclose(u128[..., ::4, ::4], u32, rtol=1e-6, atol=0)
    std = LogNormalField(C, mean=0.3, max_mode=16, standardize=True)
    m, s = ds.moments(fd.Grid((16, 16)))
    z4 = std.sample(fd.Grid((16, 16)), 4, gen(11)).double()
    assert torch.allclose(z4, (u32[..., ::2, ::2].double() - m) / s, atol=1e-5)
    z = std.sample(fd.Grid((16, 16)), 2000, gen(0)).double()
    assert abs(float(z.mean())) < 0.05 and abs(float(z.var()) - 1) < 0.1


def test_thresholded_field_nested_and_bounded():
    ds = ThresholdedField(fd.Matern(alpha=2.0, tau=3.0), level=0.0, sharpness=5.0, max_mode=16)
    u64 = ds.sample(fd.Grid((64, 64)), 3, gen(2))
    u16 = ds.sample(fd.Grid((16, 16)), 3, gen(2))
    assert torch.allclose(u64[..., ::4, ::4], u16, atol=1e-6)
    assert u64.abs().max() <= 1
    assert (u64 > 0.5).any() and (u64 < -0.5).any()


def test_darcy_constant_coefficient_matches_analytic_solution():
    g = fd.Grid((64, 64))
    f = fd.data.darcy_forcing(g)
    u = solve_darcy(np.ones(g.shape), f, g.spacing)
    x, y = g.mesh().numpy()
    exact = np.cos(2 * np.pi * x) * np.cos(2 * np.pi * y)
    h = 1 / 64
    discrete_factor = 4 * np.pi**2 / ((2 - 2 * np.cos(2 * np.pi * h)) / h**2)  # 5-point eigenvalue ratio
    assert np.allclose(u, discrete_factor * exact, atol=1e-10)
    assert np.abs(u - exact).max() < 2e-3  # O(h²): (2 pi h)² / 12 ~ 8e-4
    with pytest.raises(ValueError, match="mean-zero f"):
        solve_darcy(np.ones(g.shape), f + 1.0, g.spacing)
    with pytest.raises(ValueError, match="positive"):
        solve_darcy(-np.ones(g.shape), f, g.spacing)


def test_darcy_discretisation_is_reflection_equivariant():
    """Harmonic-mean faces make the discrete operator commute with x -> -x (f is even)."""
    g = fd.Grid((32, 32))
    cov = fd.Matern(alpha=2.0, tau=3.0, sigma=3.0)
    a = DarcyFlow(cov, coefficient="lognormal", max_mode=8, output="a").sample(g, 1, gen(6))[0, 0].double().numpy()
    f = fd.data.darcy_forcing(g)
    reflect = lambda v: np.roll(v[::-1, ::-1], 1, axis=(0, 1))  # index j -> -j mod N
    u = solve_darcy(a, f, g.spacing)
    u_r = solve_darcy(reflect(a), f, g.spacing)
    assert np.allclose(u_r, reflect(u), atol=1e-10)
    assert not np.allclose(u, reflect(u), atol=1e-3)  # a non-trivial check


@pytest.mark.parametrize("coefficient", ["lognormal", "threshold"])
def test_darcy_converges_under_refinement(coefficient):
    C = fd.Matern(alpha=2.0, tau=3.0, sigma=2.0) if coefficient == "lognormal" else fd.Matern(alpha=2.0, tau=3.0)
    ds = DarcyFlow(C, coefficient=coefficient, max_mode=16, output="both")
    assert ds.channels == 2
    sol = {N: ds.sample(fd.Grid((N, N)), 1, gen(4)).double() for N in (32, 64, 128)}
    # the coefficient is nested pointwise, exactly
    assert torch.equal(sol[128][:, 0, ::2, ::2], sol[64][:, 0])
    if coefficient == "threshold":  # zero_mean latent: the level set splits the domain
        assert set(sol[64][:, 0].unique().tolist()) == {3.0, 12.0}
    # the solution converges: 64 vs 128 within 1e-2 relative (L² at the 64 points); error shrinks
    ref = sol[128][:, 1]
    err = {N: float((sol[N][:, 1] - ref[..., :: 128 // N, :: 128 // N]).norm() / ref[..., :: 128 // N, :: 128 // N].norm())
           for N in (32, 64)}
    assert err[64] < 1e-2
    assert err[64] < 0.5 * err[32]
    # mean-zero solution
    assert abs(float(ref.mean())) < 1e-8


# --------------------------------------------------------------------------- interface, round trips
SPECS = [
    GaussianRandomField(fd.Matern(alpha=2.0, tau=3.0) + fd.SquaredExponential(0.1), mean=1.0, channels=2),
    GaussianRandomField(fd.LaplacianPower(power=2.0), max_mode=8),
    LogNormalField(fd.Matern(alpha=2.0, tau=3.0, sigma=3.0), max_mode=8, standardize=True),
    ThresholdedField(fd.Matern(alpha=2.0, tau=3.0), level=0.1, sharpness=3.0, max_mode=8),
    DarcyFlow(coefficient="lognormal", max_mode=8, forcing_scale=2.0),
]


@pytest.mark.parametrize("ds", SPECS, ids=lambda d: d.type_name)
def test_round_trip_and_common_interface(ds):
    spec = json.loads(json.dumps(ds.to_dict()))  # plain data only
    ds2 = dataset_from_dict(spec)
    assert type(ds2) is type(ds) and ds2.to_dict() == ds.to_dict()
    g = fd.Grid((16, 16))
    state = torch.random.get_rng_state()
    a = ds.materialize(g, 3, seed=9)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is never touched
    assert a.shape == (3, ds.channels, 16, 16) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, ds2.sample(g, 3, gen(9)))
    assert not torch.equal(a, ds.materialize(g, 3, seed=10))


def test_grf_1d_and_dispatcher_errors():
    ds = LogNormalField(fd.Matern(alpha=1.0, tau=3.0), max_mode=20)
    u = ds.sample(fd.Grid(256), 2, gen(1))
    assert u.shape == (2, 1, 256)
    assert torch.allclose(u[..., ::8], ds.sample(fd.Grid(32), 2, gen(1)), rtol=1e-6)
    d1 = DarcyFlow(fd.Matern(alpha=1.0, tau=3.0), max_mode=8).sample(fd.Grid(64), 2, gen(0))
    assert d1.shape == (2, 1, 64)
    with pytest.raises(ValueError, match="unknown data set type 'cifar'"):
        dataset_from_dict({"type": "cifar"})
    with pytest.raises(ValueError, match="bad parameters for data set 'log_normal'"):
        dataset_from_dict({"type": "log_normal", "covariance": {"type": "matern"}, "bogus": 1})
    with pytest.raises(ValueError, match="'type' key"):
        dataset_from_dict({"covariance": {}})
    with pytest.raises(ValueError, match="output"):
        DarcyFlow(output="p")
