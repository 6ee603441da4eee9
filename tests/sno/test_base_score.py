"""The closed-form KME base score and the hybrid SNO built on it: exact against Gaussian-mixture scores."""

from __future__ import annotations

import pytest
import torch

import fsdiff as fd
from fsdiff.sno import GaussianMixture, GMMFamily, KernelMeanEmbedding, ScoreNeuralOperator, build_sno
from fsdiff.sno.base_score import KMEBaseScore, fade_weight
from fsdiff.sno.training import sno_dsm_loss, sno_point_score

pytestmark = pytest.mark.usefixtures("single_thread")
SDE = fd.VPSDE(None, beta_min=0.1, beta_max=20.0)
NEVER = (10.0, 11.0)   # a fade window past T: the base is never faded


def _setup(n: int = 32, h: float = 0.1):
    fam = GMMFamily()
    origin, L = fam.box()
    return fam, KernelMeanEmbedding(fd.Grid((n, n), L), origin, h)


def _exact_eta(mix: GaussianMixture, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return -SDE.std(t.double())[:, None] * mix.score(x.double(), t.double(), SDE)


def test_fade_weight_is_a_cosine_between_the_two_times():
    t = torch.tensor([0.0, 0.3, 0.375, 0.45, 0.9], dtype=torch.float64)
    torch.testing.assert_close(fade_weight(t, (0.3, 0.45)), torch.tensor([1.0, 1.0, 0.5, 0.0, 0.0], dtype=torch.float64))


def test_base_of_the_exact_embedding_is_the_exact_score_once_s_over_m_exceeds_h():
    """For s/m >= h the base is grad log of nu * N(0, (s/m)^2): exact up to the Fourier series (64² resolves the
    embedding to ~1e-11; on 32² the aliasing of the h = 0.1 embedding gives 1.5e-3 at t = 0.05)."""
    fam, kme = _setup(64)
    mix = fam.mixture(fam.test_combinations[0])
    base = KMEBaseScore(kme.exact_gmm(mix, torch.float64), kme, pad=4, clip=1e9)
    g = torch.Generator().manual_seed(0)
    for t_val in (0.05, 0.1, 0.2, 0.35):     # s/m from 0.17 to 1.8; the padded box holds the blurred law
        x = mix.sample_perturbed(256, t_val, SDE, g, torch.float64)
        t = torch.full((256,), t_val, dtype=torch.float64)
        est = base.eta(x[None], t[None], SDE, NEVER)[0]
        exact = _exact_eta(mix, x, t)
        assert float((est - exact).norm() / exact.norm()) < 1e-5, t_val


def test_without_padding_the_series_wraps_at_large_blur():
    """The reason for the pad: with the bare box (side 5) the blurred law at t = 0.3 (s/m = 1.2) wraps around."""
    fam, kme = _setup()
    mix = fam.mixture(fam.test_combinations[0])
    x = mix.sample_perturbed(256, 0.3, SDE, torch.Generator().manual_seed(1), torch.float64)
    t = torch.full((256,), 0.3, dtype=torch.float64)
    exact = _exact_eta(mix, x, t)
    errs = {pad: float((KMEBaseScore(kme.exact_gmm(mix, torch.float64), kme, pad=pad, clip=1e9)
                        .eta(x[None], t[None], SDE, NEVER)[0] - exact).norm() / exact.norm()) for pad in (1, 4)}
    assert errs[1] > 0.3 and errs[4] < 1e-5, errs


def test_base_of_an_empirical_embedding_is_the_score_of_the_blurred_samples():
    """From n samples y_i the base is the score of (1/n) sum_i N(m y_i, s^2 I) (the empirical law under the SDE)."""
    fam, kme = _setup(64)
    y = fam.mixture(fam.test_combinations[1]).sample(5, torch.Generator().manual_seed(2), torch.float64)
    points = GaussianMixture(y, 1e-12 * torch.eye(2, dtype=torch.float64).expand(5, 2, 2), torch.ones(5))
    base = KMEBaseScore(kme.empirical(y, torch.float64), kme, pad=4, clip=1e9)
    x = points.sample_perturbed(256, 0.1, SDE, torch.Generator().manual_seed(3), torch.float64)
    t = torch.full((256,), 0.1, dtype=torch.float64)
    exact = _exact_eta(points, x, t)
    assert float((base.eta(x[None], t[None], SDE, NEVER)[0] - exact).norm() / exact.norm()) < 1e-4


def test_base_is_faded_and_clipped():
    fam, kme = _setup()
    mix = fam.mixture(fam.test_combinations[0])
    base = KMEBaseScore(kme.exact_gmm(mix, torch.float64), kme, pad=4, clip=0.5)
    x = mix.sample_perturbed(64, 0.2, SDE, torch.Generator().manual_seed(4), torch.float64)[None]
    t = torch.full((1, 64), 0.2, dtype=torch.float64)
    eta = base.eta(x, t, SDE, NEVER)
    assert float(eta.norm(dim=-1).max()) <= 0.5 + 1e-12
    torch.testing.assert_close(base.eta(x, t, SDE, (0.1, 0.3)), fade_weight(t, (0.1, 0.3))[..., None] * eta)
    assert float(base.eta(x, t, SDE, (0.05, 0.15)).abs().max()) == 0.0


def test_hybrid_sno_starts_at_the_closed_form_and_round_trips():
    fam, kme = _setup()
    torch.manual_seed(0)
    model = ScoreNeuralOperator(hidden=32, conditioning="film", base={"t_fade": [0.3, 0.45]}).eval()
    assert model.spec["base"] == {"t_fade": [0.3, 0.45], "pad": 4, "clip": 6.0}
    mix = fam.mixture(fam.test_combinations[0])
    u = kme.exact_gmm(mix)
    x = mix.sample_perturbed(128, 0.1, SDE, torch.Generator().manual_seed(5))
    t = torch.full((128,), 0.1)
    score = sno_point_score(model, SDE, u=u, kme=kme)(x, t)
    exact = mix.score(x.double(), t.double(), SDE).float()
    assert float((score - exact).norm() / exact.norm()) < 1e-4   # residual 0, gate 1 at initialisation
    m2 = build_sno(model.spec)
    m2.load_state_dict(model.state_dict())
    torch.testing.assert_close(sno_point_score(m2.eval(), SDE, u=u, kme=kme)(x, t), score)
    # the DSM loss of a hybrid runs with its base and differentiates through the residual only
    us = kme.exact_gmm(fam.mixtures(fam.train_combinations[:2]))
    loss = sno_dsm_loss(model, fam.mixtures(fam.train_combinations[:2]).sample(16), SDE, model.encode(us, kme.grid),
                        base=model.make_base(us, kme)).mean()
    loss.backward()
    assert model.decoder[-1].weight.grad.abs().sum() > 0


def test_hybrid_errors_are_clear():
    fam, kme = _setup()
    model = ScoreNeuralOperator(hidden=32, base={"t_fade": [0.3, 0.45]})
    u = kme.exact_gmm(fam.mixture(fam.test_combinations[0]))
    with pytest.raises(ValueError, match="pass u and the KernelMeanEmbedding"):
        sno_point_score(model, SDE, u=u, grid=kme.grid)
    with pytest.raises(ValueError, match="needs base_eta"):
        model.decode(model.encode(u, kme.grid), torch.zeros(1, 3, 2), 0.1)
    with pytest.raises(ValueError, match="not a hybrid"):
        sno_dsm_loss(ScoreNeuralOperator(hidden=32), torch.zeros(1, 4, 2), SDE, torch.zeros(1, 32),
                     base=model.make_base(u, kme))
    for bad in ({"t_fade": [0.5, 0.3]}, {"t_fade": [0.1, 0.2], "pad": 0}, {"fade": [0.1, 0.2]}, {"t_fade": [0.1]}):
        with pytest.raises(ValueError, match="base"):
            ScoreNeuralOperator(base=bad)
    with pytest.raises(ValueError, match="2-D 'fno' encoder"):
        ScoreNeuralOperator(encoder="none", base={"t_fade": [0.3, 0.45]})
    with pytest.raises(ValueError, match="2-D embeddings"):
        KMEBaseScore(torch.zeros(1, 1, 8), KernelMeanEmbedding(fd.Grid((8,), 5.0), (0.0,), 0.1))


def test_far_in_the_tails_the_base_points_back_to_the_mass():
    """Where the series' density is rounding noise, the base is the score of u's moment Gaussian (not zero)."""
    fam, kme = _setup()
    mix = fam.mixture(fam.test_combinations[0])
    base = KMEBaseScore(kme.exact_gmm(mix, torch.float64), kme, pad=4, clip=1e9)
    far = torch.tensor([[[2.4, -2.4], [-2.4, 2.4]]], dtype=torch.float64)   # ~8 blurred stds from every component
    t = torch.full((1, 2), 0.1, dtype=torch.float64)
    eta = base.eta(far, t, SDE, NEVER)[0]
    m = SDE.mean_scale(t[0])[:, None]
    outward = far[0] - m * mix.mean()
    assert (eta.norm(dim=-1) > 1).all() and ((eta * outward).sum(-1) > 0).all()   # eta = -s * score points outward
    torch.testing.assert_close(base.mean[0], mix.mean(), atol=1e-6, rtol=0)


def test_base_and_hybrid_do_not_depend_on_the_encoding_grid():
    """The same mixture embedded on 32² and 64²: the closed form, and an untrained hybrid's score, agree to the
    32² grid's aliasing of the h = 0.1 embedding (measured ~1e-3 at t = 0.05, below 1e-6 from t = 0.1)."""
    fam, kme32 = _setup(32)
    kme64 = kme32.with_grid(64)
    mix = fam.mixture(fam.test_combinations[2])
    torch.manual_seed(0)
    model = ScoreNeuralOperator(hidden=32, conditioning="film", base={"t_fade": [0.3, 0.45]}).double().eval()
    g = torch.Generator().manual_seed(6)
    for t_val, tol in ((0.05, 5e-3), (0.1, 1e-5), (0.25, 1e-5)):
        x = mix.sample_perturbed(256, t_val, SDE, g, torch.float64)
        t = torch.full((256,), t_val, dtype=torch.float64)
        s32, s64 = (sno_point_score(model, SDE, u=k.exact_gmm(mix, torch.float64), kme=k)(x, t) for k in (kme32, kme64))
        assert float((s32 - s64).norm() / s64.norm()) < tol, t_val
