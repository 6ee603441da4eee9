"""The memory bound of sampling: budget parsing, the chunk rule, and refusals."""

import pytest

import fsdiff as fd
from fsdiff.sampling import chunk_size_for, parse_memory, sampling_bytes
from fsdiff.sampling.memory import activation_channels


def test_parse_memory_units():
    assert parse_memory("512M") == 512 * 2**20
    assert parse_memory("1.5GiB") == int(1.5 * 2**30)
    assert parse_memory("2g") == 2 * 2**30
    assert parse_memory(1000) == 1000
    for bad in ("3X", "", "-1G", "0", "G"):
        with pytest.raises(ValueError, match="memory must be"):
            parse_memory(bad)


def test_chunk_rule_is_the_largest_chunk_within_the_budget():
    model = fd.FNOScore(in_channels=1, width=32, modes=(4, 4), n_layers=1)
    assert activation_channels(model) == 32
    grid = fd.Grid((256, 256))
    budget = parse_memory("1G")
    c = chunk_size_for(model, grid, 64, 1, budget)
    assert sampling_bytes(model, grid, 64, 1, c) <= budget < sampling_bytes(model, grid, 64, 1, c + 1)
    # the peak is O(n P + chunk P): a 4x finer grid takes a 4x smaller chunk (state aside)
    coarse = fd.Grid((128, 128))
    per = [sampling_bytes(model, g, 0, 1, 1) for g in (coarse, grid)]
    assert per[1] == 4 * per[0]
    assert sampling_bytes(model, grid, 8, 1, 0) == 4 * sampling_bytes(model, coarse, 8, 1, 0)

    assert chunk_size_for(model, fd.Grid((16, 16)), 8, 1, budget) == 8  # never more than n


def test_a_budget_too_small_names_what_is_needed():
    model = fd.FNOScore(in_channels=1, width=32, modes=(4, 4), n_layers=1)
    with pytest.raises(ValueError, match=r"need about .* GiB with one field per model call"):
        chunk_size_for(model, fd.Grid((512, 512)), 64, 1, parse_memory("10M"))


def test_nested_specs_are_searched():
    net = fd.FNOScore(in_channels=1, width=24, modes=(4, 4), n_layers=1, cond_channels=1)
    sde = fd.VPSDE(fd.Matern(alpha=1.5, tau=8.0))
    from fsdiff.data.statistics import SpectralStatistics
    import torch

    stats = SpectralStatistics((8, 8)).fit(torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)))
    assert activation_channels(fd.SpectralPreconditioner(net, sde, stats)) == 24
    assert activation_channels(lambda x, t, g: x) == 64  # no spec: the documented default


def test_sample_command_keeps_the_budget_or_refuses_before_writing(tmp_path, capsys):
    from fsdiff._paths import REPO_ROOT
    from fsdiff.app.cli import main

    model = str(REPO_ROOT / "pretrained" / "mnist.pt")
    out = tmp_path / "s.nc"
    assert main(["sample", model, "--resolution", "28", "512", "--n", "64", "--max-memory", "10M",
                 "--out", str(out), "--quiet"]) == 2
    assert "need about" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # neither resolution was sampled
    assert main(["sample", model, "--resolution", "28", "--n", "3", "--steps", "2", "--max-memory", "1G",
                 "--out", str(out), "--quiet"]) == 0
    assert out.exists() and out.with_suffix(".png").exists()
