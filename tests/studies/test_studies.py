"""Every resolution study runs end to end at tiny size (``--quick``) and writes netCDF + PNG + summary."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

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


def _agg(rows: dict) -> dict:
    """Validation aggregates from ``{setting key: {K: (both right, memorisation ratio[, FD])}}`` (FD 100 if not given)."""
    return {key: {f"K{k}": {"both_right": v[0], "nearest_support_samples": v[1], "nearest_support_real": 1.0,
                            "fd": v[2] if len(v) > 2 else 100.0}
                  for k, v in per_k.items()} for key, per_k in rows.items()}


def test_choice_rule_takes_the_lowest_fd_among_settings_near_the_best_adherence():
    g = _study("sno_mnist2_guidance")
    full = (0.0, 1.0)
    settings = [(w, full, a) for w in (4.0, 5.0) for a in (0.0, 1.0)]
    agg = _agg({"w4_t0-1": {1: (0.83, 1.03, 210), 5: (0.99, 1.01, 150)},
                "w4_t0-1_aug1": {1: (0.72, 1.02, 160), 5: (0.97, 1.02, 100)},   # K = 1: 0.11 below the best
                "w5_t0-1": {1: (0.84, 1.08, 300), 5: (1.00, 1.06, 220)},
                "w5_t0-1_aug1": {1: (0.74, 1.03, 200), 5: (0.99, 1.00, 140)}})
    # per weight, K = 1 keeps the most adherent strength (the other is beyond the 0.05 slack), K = 5 the lower FD;
    # w = 5 is 0.005 more adherent on average but has the higher mean FD
    assert g._choose(agg, settings) == {1: (4.0, full, 0.0), 5: (4.0, full, 1.0)}
    agg["w4_t0-1"]["K1"]["both_right"] = 0.70    # now w = 4 is beyond the slack of w = 5's mean adherence
    assert g._choose(agg, settings) == {1: (5.0, full, 0.0), 5: (5.0, full, 1.0)}


def test_few_shot_choice_rule_takes_one_weight_and_the_augmentation_per_k():
    from fsdiff.sno.latent import recommended_augmentation, recommended_guidance

    g = _study("sno_mnist2_guidance")
    full = (0.0, 1.0)
    settings = [(5.0, full, 0.0), (5.0, full, 1.5), (6.0, full, 0.0), (6.0, full, 1.5)]
    agg = _agg({"w5_t0-1": {1: (0.80, 0.90), 5: (0.85, 1.00)}, "w5_t0-1_aug1.5": {1: (0.70, 0.95), 5: (0.80, 1.05)},
                "w6_t0-1": {1: (0.85, 0.95), 5: (0.90, 1.05)}, "w6_t0-1_aug1.5": {1: (0.70, 1.10), 5: (0.75, 1.10)}})
    chosen = g._choose(agg, settings)   # w = 5 has no K = 1 setting with ratio >= 1
    assert chosen == {1: (6.0, full, 1.5), 5: (6.0, full, 0.0)}
    config = {"sampling": g.recommendation(chosen)}
    assert recommended_guidance(config) == 6.0
    assert recommended_augmentation(config, 1).strength == 1.5 and recommended_augmentation(config, 4).strength == 1.5
    assert recommended_augmentation(config, 5) is None
    # nothing qualifies: the setting with the highest smaller ratio, at every K
    low = _agg({"w5_t0-1": {1: (0.80, 0.70), 5: (0.85, 0.80)}, "w5_t0-1_aug1.5": {1: (0.70, 0.75), 5: (0.80, 0.85)},
                "w6_t0-1": {1: (0.85, 0.75), 5: (0.90, 0.85)}, "w6_t0-1_aug1.5": {1: (0.70, 0.90), 5: (0.75, 0.88)}})
    assert g._choose(low, settings) == {1: (6.0, full, 1.5), 5: (6.0, full, 1.5)}


def test_one_hot_baseline_null_label_is_the_zero_conditioning():
    import torch

    b = _study("sno_mnist2_baselines")
    means = {3: torch.ones(2, 7, 14), 8: 2 * torch.ones(2, 7, 14)}
    m = b.OneHotScore(torch.nn.Identity(), means)
    c = m.cond([8, b.NULL_LABEL, 3])
    assert torch.equal(c[0], means[8]) and torch.equal(c[1], torch.zeros(2, 7, 14)) and torch.equal(c[2], means[3])


def test_ship_sno_sampling_writes_the_recommendation_and_refuses_another_checkpoint(tmp_path):
    import torch

    import fsdiff as fd
    from fsdiff.sno.latent import LatentAutoencoder, load_few_shot, recommended_augmentation, recommended_guidance, save_few_shot

    s = _study("sno_mnist2_guidance")
    ship = _study("ship_sno_sampling")
    torch.manual_seed(0)
    sno = fd.FNOScore(in_channels=2, width=4, modes=(3, 6), n_layers=1, cond_channels=2)
    ck = save_few_shot(tmp_path / "fs.pt", LatentAutoencoder(2, 4), sno, fd.VPSDE(fd.Matern(alpha=1.5, tau=8.0)),
                       {"study": {"sno_steps": 5}}, 5)
    full = (0.0, 1.0)
    chosen = {1: (6.0, full, 1.5), 5: (5.0, full, 0.0)}
    metrics = {"both_right": 0.8, "nearest_support_samples": 0.3, "nearest_support_real": 0.25,
               "nearest_others_samples": 0.3, "nearest_others_real": 0.3}
    results = {"checkpoint": str(ck), "recommendation": s.recommendation(chosen), "validation_classes": ["02", "04"],
               "rule": "the rule", "chosen": {f"K{k}": s._setting_key(*v) for k, v in chosen.items()},
               "test": {s._setting_key(*chosen[1]): {"K1": metrics}, s._setting_key(*chosen[5]): {"K5": metrics, "K50": metrics}}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    out = ship.ship(ck, tmp_path / "results.json", tmp_path / "shipped.pt", "trained by a test")
    *_, config = load_few_shot(out, with_config=True)
    assert config["study"] == {"sno_steps": 5}
    assert recommended_guidance(config) == 6.0 and recommended_augmentation(config, 1).strength == 1.5
    assert recommended_augmentation(config, 5) is None
    note = config["sampling"]["note"]
    assert note.startswith("trained by a test") and "K = 1: both right 0.80, memorisation ratio 1.20" in note
    assert "K = 50" in note and "support / control 1.20" in note
    other = save_few_shot(tmp_path / "other.pt", LatentAutoencoder(2, 4), sno, fd.VPSDE(fd.Matern(alpha=1.5, tau=8.0)))
    with pytest.raises(ValueError, match="evaluated .*fs.pt, not"):
        ship.ship(other, tmp_path / "results.json", tmp_path / "refused.pt", "x")
    assert not (tmp_path / "refused.pt").exists()


def test_one_hot_baseline_is_cached_by_its_settings(tmp_path):
    import torch

    b = _study("sno_mnist2_baselines")
    means = {3: torch.ones(2, 7, 14)}
    calls = []

    def train():
        calls.append(1)
        m = b.OneHotScore(torch.nn.Identity(), means)
        with torch.no_grad():
            m.embedding.add_(len(calls))
        return m, [0.5], 1.0

    def make():
        return b.OneHotScore(torch.nn.Identity(), means)

    first, losses, _ = b.cached_one_hot(make, {"steps": 5}, tmp_path, lambda: train()[:2])
    again, _, _ = b.cached_one_hot(make, {"steps": 5}, tmp_path, lambda: train()[:2])
    assert len(calls) == 1 and losses == [0.5] and torch.equal(again.embedding, first.embedding)
    other, _, _ = b.cached_one_hot(make, {"steps": 6}, tmp_path, lambda: train()[:2])
    assert len(calls) == 2 and not torch.equal(other.embedding, first.embedding)
    b.cached_one_hot(make, {"steps": 5}, None, lambda: train()[:2])   # no work dir: always trains
    assert len(calls) == 3
    # a file of another architecture (other classes) under another key is retrained, never loaded into this one
    wider = {3: torch.ones(2, 7, 14), 4: torch.zeros(2, 7, 14)}
    model, _, _ = b.cached_one_hot(lambda: b.OneHotScore(torch.nn.Identity(), wider), {"steps": 7}, tmp_path,
                                   lambda: (b.OneHotScore(torch.nn.Identity(), wider), [0.1]))
    assert model.embedding.shape[0] == 2


def test_cached_training_reads_back_only_a_file_trained_with_the_same_key(tmp_path):
    c = _study("_common")
    calls, store = [], {}

    def train():
        calls.append(1)
        return f"model {len(calls)}"

    def read(path):
        key, result, seconds = store[path]
        return key, lambda: (result, seconds)

    def write(path, key, result, seconds):
        store[path] = (key, result, seconds)
        path.write_text("x")

    path = tmp_path / "m.pt"
    first, _ = c.cached_training(path, {"steps": 5, "shots": (1, 5)}, train, read, write)
    again, _ = c.cached_training(path, {"steps": 5, "shots": (1, 5)}, train, read, write)   # tuples compare as lists
    assert (first, again, len(calls)) == ("model 1", "model 1", 1)
    other, _ = c.cached_training(path, {"steps": 6, "shots": (1, 5)}, train, read, write)
    assert (other, len(calls)) == ("model 2", 2) and store[path][0] == {"steps": 6, "shots": [1, 5]}
    assert c.cached_training(None, {"steps": 6}, train, read, write)[0] == "model 3"   # no path: always trains


def test_one_hot_domination_needs_both_measures():
    b = _study("sno_mnist2_baselines")
    one_hot = {"one_hot_seen": {"both_right": 0.55, "fd": 200.0}, "one_hot_seen_w6": {"both_right": 0.99, "fd": 330.0}}
    assert b.dominated_by({"both_right": 0.97, "fd": 150.0}, one_hot) == []           # better FD than w6, better adherence than w1
    assert b.dominated_by({"both_right": 0.90, "fd": 400.0}, one_hot) == ["one_hot_seen_w6"]
    assert b.dominated_by({"both_right": 0.30, "fd": 300.0}, one_hot) == ["one_hot_seen"]   # w6 is worse on FD
    assert b.dominated_by({"both_right": 0.30, "fd": 400.0}, one_hot) == ["one_hot_seen", "one_hot_seen_w6"]
    assert b.dominated_by({"both_right": 0.99, "fd": 330.0}, one_hot) == []           # a tie is not domination


def test_paired_bootstrap_interval():
    c = _study("_common")
    assert c.paired_bootstrap_ci([0.5, 0.7, 0.9], [0.4, 0.6, 0.8]) == pytest.approx((0.1, 0.1))   # constant difference
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(40, generator=g).tolist(), torch.randn(40, generator=g).tolist()
    lo, hi = c.paired_bootstrap_ci(a, b)
    mean = sum(x - y for x, y in zip(a, b)) / 40
    assert lo < mean < hi and 0.3 < hi - lo < 1.0   # about 2 x 1.96 sqrt(2 / 40) = 0.88 wide
    with pytest.raises(ValueError, match="paired"):
        c.paired_bootstrap_ci([1.0, 2.0], [1.0])


def test_significant_domination_needs_an_interval_clear_of_zero():
    b = _study("sno_mnist2_baselines")

    def rows(br, fd):
        return {"both_right": sum(br) / len(br), "fd": sum(fd) / len(fd),
                "per_class": [{"class": f"{i:02d}", "both_right": x, "fd": y} for i, (x, y) in enumerate(zip(br, fd))]}

    sno = rows([0.90, 0.80, 0.95, 0.85], [150.0, 160.0, 140.0, 170.0])
    clearly_better = rows([0.99, 0.90, 0.99, 0.95], [150.0, 160.0, 140.0, 170.0])    # +0.05 to +0.10 in every class
    noisy = rows([0.99, 0.75, 0.99, 0.82], [150.0, 160.0, 140.0, 170.0])             # better on average, not in every class
    worse_fd = rows([0.99, 0.90, 0.99, 0.95], [250.0, 260.0, 240.0, 270.0])
    assert b.significantly_dominated_by(sno, {"a": clearly_better, "b": noisy, "c": worse_fd}) == ["a"]
    assert b.dominated_by(sno, {"b": noisy}) == ["b"]   # the plain means would call it domination
    with pytest.raises(ValueError, match="different classes"):
        b.significantly_dominated_by(sno, {"x": rows([0.9], [1.0])})


def test_choice_rule_also_bounds_the_pull_towards_the_support():
    g = _study("sno_mnist2_guidance")
    full = (0.0, 1.0)
    settings = [(6.0, full, 0.0), (6.0, full, 1.0)]

    def a(br, ratio, control):
        return {"both_right": br, "nearest_support_samples": ratio, "nearest_support_real": 1.0,
                "nearest_others_samples": control, "nearest_others_real": 1.0, "fd": 100.0}

    # no augmentation: ratio 1.05 but support / control 1.05 / 1.4 = 0.75 (thick near copies); strength 1 clears both
    agg = {"w6_t0-1": {"K1": a(0.9, 1.05, 1.4), "K5": a(0.95, 1.1, 1.1)},
           "w6_t0-1_aug1": {"K1": a(0.8, 1.1, 1.2), "K5": a(0.9, 1.1, 1.1)}}
    assert g.memorisation_margin(agg["w6_t0-1"]["K1"]) == pytest.approx(1.05 / 1.4 / 0.85)
    assert g._choose(agg, settings) == {1: (6.0, full, 1.0), 5: (6.0, full, 0.0)}


def test_sno_mnist2_diagnosis_quick(tmp_path):
    assert _study("sno_mnist2_diagnosis").main(["--quick", "--out", str(tmp_path)]) == 0
    s = json.loads((tmp_path / "results.json").read_text())
    assert set(s["residual_windows"]) == {"0-1", "0-0", "0-0.2", "0-0.5", "0.2-1", "0.5-1"}
    assert s["spectrum"]["nyquist_noise"] == 0.0          # the Q-Wiener noise never reaches the Nyquist column
    assert 0 <= s["latent"]["lowpass_3"] <= 1 and "## 3." in (tmp_path / "summary.md").read_text()


def test_double_digit_config_is_the_shipped_models_recipe_and_checks_its_keys(tmp_path):
    import dataclasses
    import tomllib

    from fsdiff._paths import PRETRAINED_DIR
    from fsdiff.config import dataclass_from_table
    from fsdiff.errors import ConfigError

    s = _study("sno_mnist2")
    table = tomllib.loads((REPO_ROOT / "configs" / "sno_double_digits.toml").read_text())["study"]
    cfg = dataclass_from_table(s.SNOMnist2Config, table, "study")
    shipped = torch.load(PRETRAINED_DIR / "sno_double_digits.pt", weights_only=True)["config"]["study"]
    assert json.loads(json.dumps(dataclasses.asdict(cfg))) == json.loads(json.dumps(shipped))
    bad = tmp_path / "bad.toml"
    bad.write_text('[study]\nsno_step = 10\n')
    with pytest.raises(ConfigError, match="study.sno_step"):
        s.main(["--config", str(bad), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()   # refused before anything is written


def test_sno_mnist2_reuses_the_autoencoder_of_a_few_shot_checkpoint_and_refuses_other_files(tmp_path):
    import torch

    from fsdiff._paths import PRETRAINED_DIR
    from fsdiff.errors import CheckpointError
    from fsdiff.io import save_checkpoint
    from fsdiff.sno.latent import LatentAutoencoder, load_few_shot

    s = _study("sno_mnist2")
    shipped = PRETRAINED_DIR / "sno_double_digits.pt"
    expected = load_few_shot(shipped)[0].state_dict()
    from_few_shot = s.read_autoencoder(shipped, LatentAutoencoder(4, 16))
    assert not from_few_shot.training
    assert all(torch.equal(v, expected[k]) for k, v in from_few_shot.state_dict().items())
    # the study's own autoencoder.pt format gives the same weights
    own = tmp_path / "autoencoder.pt"
    save_checkpoint(own, {"config": {}, "model": {"spec": from_few_shot.spec, "state_dict": from_few_shot.state_dict()},
                          "step": 0})
    again = s.read_autoencoder(own, LatentAutoencoder(4, 16)).state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in again.items())
    other = tmp_path / "other.pt"
    save_checkpoint(other, {"kind": "something_else", "config": {}, "model": {"weights": {}}, "step": 0})
    with pytest.raises(CheckpointError, match="must hold 'spec' and 'state_dict'"):
        s.main(["--quick", "--autoencoder", str(other), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()   # refused before anything is written


def test_sno_mnist2_loss_bands_quick(tmp_path):
    args = ["--quick", "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work")]
    assert _study("sno_mnist2_loss_bands").main(args) == 0
    s = json.loads((tmp_path / "out" / "results.json").read_text())
    held = s["results"]["held-out"]
    assert {"one-hot, label", "one-hot, null label", "SNO, K = 1", "SNO, K = 5 deformed", "SNO, class mean",
            "SNO, null prototype"} <= set(held)
    assert held["one-hot, label"]["minus_reference"]["all"]["mean"] == 0.0
    assert sum(held["SNO, K = 1"][b]["n"] for b in ("0-0.2", "0.2-0.5", "0.5-1")) == s["n"]   # the bands split the times
    # the label is information at high noise: dropping it costs the one-hot model there
    assert held["one-hot, null label"]["minus_reference"]["0.5-1"]["mean"] > 0
    assert (tmp_path / "out" / "loss_by_time.png").is_file()


def test_one_hot_file_of_another_run_is_read_only_for_the_same_architecture(tmp_path):
    import torch

    b = _study("sno_mnist2_baselines")
    means = {3: torch.ones(2, 7, 14)}

    def make():
        return b.OneHotScore(torch.nn.Identity(), means)

    trained = make()
    with torch.no_grad():
        trained.embedding.add_(2.0)
    b.cached_one_hot(make, {"steps": 5, "spec": {"width": 8}}, tmp_path, lambda: (trained, [0.5, 0.4]))
    model, losses, _, steps = b.read_one_hot(tmp_path / "one_hot.pt", make, {"width": 8})
    assert torch.equal(model.embedding, trained.embedding) and losses == [0.5, 0.4] and steps == 2
    with pytest.raises(ValueError, match="not a one-hot baseline of this checkpoint's architecture"):
        b.read_one_hot(tmp_path / "one_hot.pt", make, {"width": 16})
