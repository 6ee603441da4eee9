"""Q^{1/2}-coloured output: the network's output is damped mode by mode and rebuilt from its spec."""

import torch

import fsdiff as fd
from fsdiff.models import QColouredOutput, build_model


def test_output_is_coloured_per_mode_and_round_trips():
    torch.manual_seed(0)
    cov = fd.LaplacianPower(power=2.0)  # zero mode has lambda_0 = 0: output must have zero mean
    model = QColouredOutput(fd.FNOScore(width=8, modes=(4, 4), n_layers=2), cov)
    g = fd.Grid((16, 16))
    x = torch.randn(3, 1, 16, 16, dtype=torch.float32)
    t = torch.tensor([0.1, 0.5, 0.9])
    out = model(x, t, g)
    raw = model.net(x, t, g)
    lam = cov.eigenvalues(g).float()
    expected = g.rfft(raw) * lam.sqrt()
    assert torch.allclose(g.rfft(out), expected, atol=1e-6)
    assert g.integrate(out).abs().max() < 1e-6
    rebuilt = build_model(model.spec)
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt(x, t, g), out)
