"""Run configuration: TOML files, overrides, validation naming the key, round trips, train_from_config."""

import tomllib

import pytest
import torch

import fsdiff as fd
from fsdiff._paths import CONFIGS_DIR
from fsdiff.config import ConfigError, RunConfig, config_from_dict, load_config
from fsdiff.io import CheckpointError, dumps_toml

CONFIGS = CONFIGS_DIR


@pytest.mark.parametrize("name", ["synthetic", "mnist", "fashion_mnist"])
def test_shipped_configs_load_and_build(name):
    cfg = load_config(CONFIGS / f"{name}.toml")
    assert isinstance(cfg, RunConfig) and cfg.name == name
    sde = cfg.sde.build()
    assert isinstance(sde, fd.VPSDE) and sde.beta_min == 0.1 and sde.beta_max == 20.0
    assert sde.covariance.is_trace_class(2)
    spec = cfg.model.spec()
    assert spec["type"] == "uno_score" and spec["precondition"] == "spectral"
    assert spec["modes"] == (cfg.grid.shape[0] - 1) // 2  # the band holds every mode of the training grid
    assert not cfg.multilevel.levels or cfg.multilevel.levels[-1] == cfg.grid.shape[0]
    from fsdiff.data import dataset_from_dict

    ds = dataset_from_dict(cfg.data.spec())  # MNIST loads lazily: building it reads nothing
    assert ds.channels == 1


def test_overrides_are_toml_literals():
    cfg = load_config(CONFIGS / "synthetic.toml", ["training.steps=7", "training.betas=[0.8, 0.99]",
                                                   "multilevel.schedule=mlmc", "multilevel.samples=[8, 2]",
                                                   "training.lr=3e-4", 'name="x"', "model.channels=[8, 8, 8]"])
    assert cfg.training.steps == 7 and cfg.training.betas == (0.8, 0.99) and cfg.training.lr == 3e-4
    assert cfg.multilevel.schedule == "mlmc" and cfg.multilevel.samples == (8, 2)
    assert cfg.name == "x" and cfg.model.spec()["channels"] == [8, 8, 8]
    assert load_config(None).training.steps == RunConfig().training.steps


@pytest.mark.parametrize("override, key", [
    ("training.stepz=3", "training.stepz"),
    ("training.steps='many'", "training.steps"),
    ("training.steps=2.5", "training.steps"),
    ("training.lr=-1.0", "training.lr"),
    ("training.ema_decay=1.0", "training.ema_decay"),
    ("training.weighting=snr", "training.weighting"),
    ("multilevel.schedule=fine_to_coarse", "multilevel.schedule"),
    ("multilevel.levels=[8, 32, 16]", "multilevel.levels"),
    ("multilevel.levels=[8, 16]", "multilevel.levels"),
    ("multilevel.fractions=[1.0]", "multilevel.fractions"),
    ("sde.type=sub_vp", "sde.type"),
    ("sde.covariance.type=blue", "sde.covariance"),
    ("grid.shape=[2, 2]", "grid.shape"),
    ("optimiser.lr=1.0", "optimiser"),
    ("training.micro_batch_size=-1", "training.micro_batch_size"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(CONFIGS / "synthetic.toml", [override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[training\nsteps = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["training.steps"])


def test_to_dict_round_trips_through_toml():
    for name in ("synthetic", "mnist"):
        cfg = load_config(CONFIGS / f"{name}.toml", ["sde.covariance={type='sum', terms=[{type='matern', alpha=2.0, "
                                                     "tau=3.0, sigma=1.0}, {type='laplacian_power', power=1.5, scale=2.0}]}"])
        d = cfg.to_dict()
        text = dumps_toml(d)
        assert tomllib.loads(text) == d
        assert config_from_dict(tomllib.loads(text)) == cfg
    assert dumps_toml({"a": {"b": {"c": 1}}, "x": [1.5, "s", True]}) == 'x = [1.5, "s", true]\n\n[a.b]\nc = 1\n'


def test_train_from_config_writes_a_run_and_load_run_reads_it(tmp_path, single_thread):
    from fsdiff.training import load_run, train_from_config

    cfg = load_config(CONFIGS / "synthetic.toml", [
        "grid.shape=[16, 16]", "multilevel.levels=[8, 16]", "model.channels=[8, 8, 8]", "model.modes=3",
        "model.stats_samples=64", "training.steps=4", "training.batch_size=4", "training.n_val=4",
        "training.eval_every=2", "training.checkpoint_every=2", "training.warmup_steps=1"])
    path = train_from_config(cfg, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert path == run / "checkpoints" / "step_00000004.pt"
    for f in ("config.toml", "metrics.csv", "metrics.json", "loss.png"):
        assert (run / f).is_file(), f
    assert load_config(run / "config.toml") == cfg
    model, sde, grid, cfg2 = load_run(run)
    assert cfg2 == cfg and grid == fd.Grid((16, 16)) and sde.to_dict() == cfg.sde.build().to_dict()
    ck = torch.load(path, weights_only=True)
    for k, v in model.state_dict().items():  # EMA weights
        assert torch.equal(v, ck["ema"]["state_dict"][k])
    x = torch.zeros(2, 1, 24, 24)
    assert model(x, torch.full((2,), 0.5), fd.Grid((24, 24))).shape == x.shape  # any resolution
    (tmp_path / "x.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError):
        load_run(tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        load_run(tmp_path)
