"""Training on Gaussian random fields approaches the exact oracle's DSM loss."""

import torch

import fsdiff as fd


def _fixed_loss(model, x0, sde, g, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return fd.dsm_loss(model, x0, sde, g, generator=gen).mean().item()


def test_training_on_grf_approaches_oracle_loss(single_thread):
    g = fd.Grid((16, 16))
    q = fd.Matern(alpha=2.0, tau=3.0, sigma=8.0)
    c_data = fd.Matern(alpha=2.5, tau=5.0, sigma=30.0)
    sde = fd.VPSDE(q)
    oracle = fd.GaussianScore(sde, cov=c_data)
    torch.manual_seed(0)
    net = fd.FNOScore(width=16, modes=(7, 7), n_layers=2)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    x_val = c_data.sample(g, 512, generator=torch.Generator().manual_seed(2))
    before = _fixed_loss(net, x_val, sde, g, 3)
    for step in range(300):
        x0 = c_data.sample(g, 32, generator=gen)
        loss = fd.dsm_loss(net, x0, sde, g, generator=gen).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    trained = _fixed_loss(net, x_val, sde, g, 3)
    best = _fixed_loss(oracle, x_val, sde, g, 3)
    gap = (trained - best) / best
    print(f"DSM loss: untrained {before:.4f}, trained {trained:.4f}, oracle {best:.4f}, gap {gap:.1%}")
    assert trained < before
    assert gap < 0.05  # measured 1.7% (deterministic seeds; tolerance leaves room for BLAS rounding)
