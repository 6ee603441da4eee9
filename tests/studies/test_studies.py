"""Every resolution study runs end to end at tiny size (``--quick``) and writes netCDF + PNG + summary."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

from fsdiff._paths import REPO_ROOT

STUDIES = REPO_ROOT / "resolution_studies"


def _study(name: str):
    if str(STUDIES) not in sys.path:
        sys.path.insert(0, str(STUDIES))
    return importlib.import_module(name)


def _check_outputs(out: Path, nc: str) -> None:
    import xarray as xr

    assert (out / "summary.md").is_file()
    assert list(out.glob("*.png"))
    ds = xr.open_dataset(out / nc, engine="scipy")
    ds.close()
    assert not list(out.glob(".tmp-*"))


pytestmark = pytest.mark.usefixtures("single_thread")  # the studies set their own thread count; restored after


def test_noise_study(tmp_path):
    assert _study("noise").main(["--quick", "--out", str(tmp_path)]) == 0
    _check_outputs(tmp_path, "noise.nc")


def test_synthetic_invariance_study(tmp_path):
    args = ["--quick", "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work"),
            "--variants", "fno_trace", "fno_white"]
    assert _study("synthetic_invariance").main(args) == 0
    _check_outputs(tmp_path / "out", "synthetic_invariance.nc")


def test_mnist_study(tmp_path, data_env):
    if not (data_env / "mnist").is_dir():
        pytest.skip(f"MNIST files not found in {data_env}")
    args = ["--quick", "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work"),
            "--variants", "single", "white", "--sampler-table"]
    assert _study("mnist_quality").main(args) == 0
    out = tmp_path / "out"
    assert (out / "summary.md").is_file() and {p.name for p in out.glob("*.png")} == {"samples_single.png", "samples_white.png"}
    res = json.loads((out / "results.json").read_text())
    assert set(res["variants"]) == {"single", "white"} and len(res["samplers"]) == 2
    assert [r["grid"] for r in res["variants"]["single"]["rows"]] == [28, 56]


def test_multilevel_cost_study(tmp_path):
    args = ["--quick", "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work")]
    assert _study("multilevel_cost").main(args) == 0
    _check_outputs(tmp_path / "out", "multilevel_cost.nc")


def test_wpo_toy_study(tmp_path):
    assert _study("wpo_toy").main(["--quick", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "summary.md").read_text()
    assert "swiss_roll_6d" in text and "Does Gamma align" in text
    assert {p.name for p in tmp_path.glob("*.png")} >= {"samples.png", "gamma_ellipses.png", "swiss6d_alignment.png"}
    assert not list(tmp_path.glob(".tmp-*"))


def test_ndsm_study(tmp_path):
    assert _study("ndsm_study").main(["--quick", "--no-mnist", "--out", str(tmp_path)]) == 0
    assert "control variate" in (tmp_path / "summary.md").read_text()
    assert {p.name for p in tmp_path.glob("*.png")} >= {"samples.png", "grad_variance.png"}
    assert (tmp_path / "results.json").is_file() and not list(tmp_path.glob(".tmp-*"))
