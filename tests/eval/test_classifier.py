"""Tests of fsdiff.eval.classifier: training on real MNIST (skipped without data), the resize
protocol's resolution invariance, Fréchet distances on features, and the on-disk cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from fsdiff.eval.classifier import (
    CLASSIFIER_GRID,
    classifier_features,
    classifier_frechet_distance,
    evaluate_classifier,
    load_classifier,
    load_or_train_classifier,
    to_classifier_grid,
    train_classifier,
)
from fsdiff.grid import Grid, resample

DATA = Path(os.environ.get("FSDIFF_DATA_DIR", "/work/shared/data"))
HAVE_MNIST = (DATA / "mnist" / "train-images-idx3-ubyte.gz").is_file()
needs_mnist = pytest.mark.skipif(not HAVE_MNIST, reason=f"MNIST not found under {DATA}")


# tiny convolutions gain nothing from intra-op threads; on a loaded 2-core machine the OpenMP
# spin-waits of 2 threads made training 5-7x slower than 1 thread
pytestmark = pytest.mark.usefixtures("single_thread_module")


@pytest.fixture(scope="module")
def mnist_small():
    from fsdiff.data.mnist import load_mnist

    xtr, ytr = load_mnist("train", root=DATA, limit=2000)
    xte, yte = load_mnist("test", root=DATA, limit=1000)
    return xtr, ytr, xte, yte


@pytest.fixture(scope="module")
def trained(mnist_small):
    xtr, ytr, _, _ = mnist_small
    state = torch.random.get_rng_state()
    model = train_classifier(xtr, ytr, steps=200, batch_size=64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(state, torch.random.get_rng_state()), "training touched the global RNG"
    return model


@needs_mnist
def test_classifier_accuracy_on_small_subset(trained, mnist_small):
    # 2000 training images, 200 steps of batch 64 (~6 epochs): measured 0.926 on the first
    # 1000 test images with seed 0 (sd of the estimate ~0.008); 0.90 leaves room for platform differences in conv kernels.
    acc = evaluate_classifier(trained, mnist_small[2], mnist_small[3])
    assert acc > 0.90, acc


@needs_mnist
def test_features_do_not_depend_on_the_grid(trained, mnist_small):
    x = mnist_small[2][:64]
    f28 = classifier_features(trained, x, CLASSIFIER_GRID)
    for n in (56, 64):  # band-limited interpolation to finer grids, then back: identical images
        g = Grid((n, n))
        f = classifier_features(trained, resample(x, CLASSIFIER_GRID, g), g)
        assert torch.allclose(f, f28, atol=1e-4 * float(f28.abs().max()))
    # a data range of [-1, 1] is mapped back
    f_pm = classifier_features(trained, 2 * x - 1, CLASSIFIER_GRID, data_range=(-1.0, 1.0))
    assert torch.allclose(f_pm, f28, atol=1e-4 * float(f28.abs().max()))


@needs_mnist
def test_classifier_frechet_distance(trained, mnist_small):
    xte = mnist_small[2]
    real_a, real_b = xte[:500], xte[500:]
    same = classifier_frechet_distance(trained, real_a, CLASSIFIER_GRID, real_a)
    assert same < 1e-6
    g64 = Grid((64, 64))
    halves = classifier_frechet_distance(trained, real_a, CLASSIFIER_GRID, resample(real_b, CLASSIFIER_GRID, g64), grid_y=g64)
    noise = torch.rand(500, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    far = classifier_frechet_distance(trained, real_a, CLASSIFIER_GRID, noise)
    blurred = resample(resample(real_b, CLASSIFIER_GRID, Grid((10, 10))), Grid((10, 10)), CLASSIFIER_GRID)
    mid = classifier_frechet_distance(trained, real_a, CLASSIFIER_GRID, blurred)
    assert 0 < halves < mid < far


def test_resize_protocol_drops_nyquist_and_rejects_bad_input():
    g = CLASSIFIER_GRID
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    z = to_classifier_grid(x, g)
    assert float(g.rfft(z).abs()[..., 14, :].max()) < 1e-6  # Nyquist row removed
    assert float(g.rfft(z).abs()[..., 14].max()) < 1e-6  # Nyquist column removed
    # from a fine grid: the Fourier restriction, same as going through the 28-grid band limit
    g64 = Grid((64, 64))
    up = resample(z, g, g64)
    assert torch.allclose(to_classifier_grid(up, g64), z, atol=1e-5)
    with pytest.raises(ValueError):
        to_classifier_grid(torch.rand(3, 2, 28, 28), g)
    with pytest.raises(ValueError):
        to_classifier_grid(torch.rand(3, 1, 28), Grid(28))
    bad = x.clone()
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        to_classifier_grid(bad, g)


def test_load_or_train_caches_plain_data(tmp_path):
    gen = torch.Generator().manual_seed(0)
    # synthetic 2-class data: bright left half vs bright right half
    y = torch.randint(0, 2, (200,), generator=gen)
    x = 0.2 * torch.rand(200, 1, 28, 28, generator=gen)
    x[y == 0, :, :, :14] += 0.8
    x[y == 1, :, :, 14:] += 0.8
    data = (x[:150], y[:150]), (x[150:], y[150:])
    m1, rec1 = load_or_train_classifier("synthetic", tmp_path, steps=20, batch_size=32, train_data=data[0], test_data=data[1])
    files = list(tmp_path.glob("classifier-synthetic-*.pt"))
    assert len(files) == 1 and not list(tmp_path.glob(".*tmp"))
    assert rec1["accuracy"] > 0.9 and rec1["n_test"] == 50
    raw = torch.load(files[0], weights_only=True)  # plain data only
    assert set(raw) >= {"format_version", "spec", "state_dict", "accuracy", "settings"}
    mtime = files[0].stat().st_mtime_ns
    m2, rec2 = load_or_train_classifier("synthetic", tmp_path, steps=20, batch_size=32, train_data=data[0], test_data=data[1])
    assert files[0].stat().st_mtime_ns == mtime  # loaded, not retrained
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    m3, _ = load_classifier(files[0])
    assert evaluate_classifier(m3, *data[1]) == rec1["accuracy"]
    # other settings -> another file
    load_or_train_classifier("synthetic", tmp_path, steps=21, batch_size=32, train_data=data[0], test_data=data[1])
    assert len(list(tmp_path.glob("classifier-synthetic-*.pt"))) == 2
