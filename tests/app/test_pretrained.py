"""The score operators shipped in pretrained/: plain data, small, and they sample at any resolution."""


import pytest
import torch
import xarray as xr

from fsdiff._paths import PRETRAINED_DIR
import fsdiff as fd
from fsdiff.app.cli import main
from fsdiff.training import PRETRAINED_KIND

PRETRAINED = PRETRAINED_DIR


@pytest.mark.parametrize("name", ["mnist.pt", "fashion-mnist.pt"])
def test_pretrained_files_are_small_plain_data(name):
    path = PRETRAINED / name
    assert path.stat().st_size < 8e6
    ck = torch.load(path, weights_only=True)
    assert ck["kind"] == PRETRAINED_KIND and not {"optimizer", "rng", "ema"} & set(ck)
    model, sde, grid, cfg = fd.load_run(path)
    assert isinstance(model, fd.SpectralPreconditioner) and grid == fd.Grid((28, 28))
    assert int(model.statistics.count) >= 10000  # statistics estimated from the training split
    x = torch.randn(2, 1, 56, 56)
    with torch.no_grad():
        out = model(x, torch.tensor([0.1, 0.9]), fd.Grid((56, 56)))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_sample_a_pretrained_model_at_two_resolutions(tmp_path, single_thread):
    out = tmp_path / "s.nc"
    assert main(["sample", str(PRETRAINED / "mnist.pt"), "--resolution", "28", "56", "--n", "4", "--steps", "3",
                 "--out", str(out), "--quiet"]) == 0
    for n in (28, 56):
        with xr.open_dataset(tmp_path / f"s_{n}.nc", engine="scipy") as ds:
            assert ds["samples"].shape == (4, 1, n, n)
        assert (tmp_path / f"s_{n}.png").is_file()
