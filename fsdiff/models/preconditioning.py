"""Output preconditioning: colour the network's output with ``Q^{1/2}``.

A network that predicts ``eta`` directly makes errors of similar size on every Fourier mode.
The reverse SDE multiplies them by ``g²/s(t)``, which is large near ``t = 0``, and on fine
modes the true ``eta`` is tiny (``lambda_k`` decays), so fine-mode errors dominate the samples.
:class:`QColouredOutput` lets the network predict the *whitened* noise ``eps`` (``eta = Q^{1/2} eps``)
and returns ``eta_hat = Q^{1/2} eps_hat``: its errors on mode ``k`` are damped by
``sqrt(lambda_k)``, so ``eta_hat`` lies in the range of ``Q^{1/2}`` like ``eta`` itself, and the
DSM loss in L² weights mode ``k`` by ``lambda_k``. Select it with ``model.output = "whitened"``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..covariance import Covariance, covariance_from_dict
from ..grid import Grid

__all__ = ["QColouredOutput"]


class QColouredOutput(nn.Module):
    """``eta_hat(x_t, t) = Q^{1/2} net(x_t, t)``, same score-model protocol as ``net``.

    Parameters
    ----------
    net : nn.Module or dict
        The inner score network (or its spec, rebuilt with ``build_model``).
    covariance : Covariance or dict
        Q of the SDE the model is trained with.
    """

    def __init__(self, net: nn.Module | Mapping, covariance: Covariance | Mapping):
        super().__init__()
        if isinstance(net, Mapping):
            from . import build_model

            net = build_model(net)
        self.net = net
        self.covariance = covariance if isinstance(covariance, Covariance) else covariance_from_dict(dict(covariance))
        self._cache: dict = {}

    @property
    def spec(self) -> dict:
        return {"type": "q_coloured", "net": self.net.spec, "covariance": self.covariance.to_dict()}

    def _sqrt_multiplier(self, grid: Grid, like: torch.Tensor) -> torch.Tensor:
        key = (grid, like.dtype, like.device)
        if key not in self._cache:
            self._cache[key] = self.covariance.eigenvalues(grid).sqrt().to(device=like.device, dtype=like.dtype)
        return self._cache[key]

    def forward(self, x_t: torch.Tensor, t, grid: Grid, *args, **kwargs) -> torch.Tensor:
        eps_hat = self.net(x_t, t, grid, *args, **kwargs)
        return grid.irfft(grid.rfft(eps_hat) * self._sqrt_multiplier(grid, eps_hat))
