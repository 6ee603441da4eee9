"""Device and precision options: bf16 autocast with the FFTs in fp32, and device names."""

import pytest
import torch

import fsdiff as fd
from fsdiff.models.spectral import SpectralConv
from fsdiff.training import resolve_device, train
from fsdiff.config import TrainingConfig
from fsdiff.data.synthetic import GaussianRandomField
from fsdiff.training import MultilevelSchedule

pytestmark = pytest.mark.usefixtures("single_thread")


def test_spectral_conv_takes_bf16_and_transforms_in_fp32():
    conv = SpectralConv(4, 4, (3, 3))
    x = torch.randn(2, 4, 12, 12, generator=torch.Generator().manual_seed(0))
    y32 = conv(x)
    y16 = conv(x.bfloat16())  # torch has no bf16 FFT on the CPU: the layer upcasts
    assert y16.dtype == torch.float32
    assert (y16 - y32).norm() / y32.norm() < 1e-2  # only the input's rounding to bf16


def test_bf16_autocast_forward_is_close_to_fp32():
    torch.manual_seed(0)
    model = fd.FNOScore(in_channels=1, width=16, modes=(5, 5), n_layers=2)
    g = fd.Grid((16, 16))
    gen = torch.Generator().manual_seed(1)
    x, t = torch.randn(4, 1, 16, 16, generator=gen), torch.rand(4, generator=gen)
    with torch.no_grad():
        ref = model(x, t, g)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, t, g)
    err = float((out.float() - ref).norm() / ref.norm())
    assert 0 < err < 5e-2


def test_bf16_training_follows_the_fp32_losses(tmp_path):
    g = fd.Grid((16, 16))
    sde = fd.VPSDE(fd.Matern(alpha=1.5, tau=8.0))
    data = GaussianRandomField(fd.Matern(alpha=2.0, tau=4.0))
    losses = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = fd.FNOScore(in_channels=1, width=16, modes=(5, 5), n_layers=2)
        cfg = TrainingConfig(steps=3, batch_size=8, n_val=8, eval_every=0, precision=precision)
        out = train(model, sde, data, MultilevelSchedule([g], "single"), cfg, tmp_path / precision, progress=False)
        losses[precision] = [r["loss"] for r in out["history"]]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=3e-2)
    assert losses["bf16"] != losses["fp32"]  # autocast really ran in bf16


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")


def test_precision_is_validated():
    from fsdiff.config import ConfigError

    with pytest.raises(ConfigError, match="training.precision"):
        TrainingConfig(precision="fp16")
    with pytest.raises(ConfigError, match="training.batch_size: must be a multiple of training.data_shards"):
        TrainingConfig(batch_size=6, data_shards=4)
