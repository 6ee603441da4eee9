"""Score Neural Operator (Liao et al., arXiv 2410.08549): one network for the scores of many distributions.

``s_theta(u_nu, x, t) ~ grad log p_t^nu(x)``, NOMAD-style:

* **encoder** ``u_nu -> code (B, code_dim)``:

  - ``"fno"``: ``u (B, C, *grid.shape)`` is a function on a grid (e.g. a kernel mean embedding).
    ``[u, periodic position features] --1x1--> width``, ``n_layers`` Fourier blocks
    ``h <- GELU(K_l h + W_l h)``, ``--1x1--> code_dim``, then the **quadrature mean over the
    domain** ``(1/|D|) int h(r) dr``. Every piece is a continuum operator (pointwise maps,
    Fourier multipliers on fixed modes, positional features of modes ``1..positional_freqs``
    exactly represented on every grid with more than ``2 positional_freqs + 1`` points per
    axis), so the code does not depend on the encoding grid's resolution once the grid resolves
    the encoding. The position features make the code depend on *where* the mass is (a
    translation-equivariant FNO followed by an integral would be translation invariant).
  - ``"prototype"``: ``u (B, prototype_dim)`` is a vector (mean of samples or latent codes);
    an MLP maps it to the code.
  - ``"none"``: no conditioning; the model is an ordinary point score network (baselines).

* **decoder** ``MLP([code, x, time-embedding(t)]) -> eta_hat (.., dim)``, the predicted noise
  ``z`` in ``x_t = m(t) x_0 + s(t) z``; the score is ``-eta_hat / s(t)``
  (:func:`fsdiff.sno.sno_point_score`). With ``conditioning="film"`` the code also sets a
  per-channel scale and shift of every hidden layer, ``h <- SiLU(W h) * (1 + gamma_l(code)) +
  beta_l(code)`` (FiLM), so the distribution reaches every layer, not only the input.

**Hybrid** (``base={...}``, 2-D ``"fno"`` encoders of kernel mean embeddings): the decoder also
predicts a gate ``g = 1 + tanh(o)`` and the model's noise prediction is ``g * eta_base + r``, where
``eta_base`` is the closed-form score of the encoded law (:class:`fsdiff.sno.base_score.KMEBaseScore`,
faded out between ``base["t_fade"]``). The last decoder layer starts at zero, so training starts from
the closed form, and the network learns what it cannot give: large ``t``, ``s/m < h`` and the
correction of empirical encodings from few samples.

``model.spec`` is a plain dict (``"type": "sno"``), rebuilt by :func:`build_sno`. It is not a
function-space score model (its call is ``decode(code, x, t)`` on points), so it is not in
:func:`fsdiff.models.build_model`'s table.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..grid import Grid
from ..models.embedding import SinusoidalTimeEmbedding
from ..models.spectral import SpectralConv, normalize_modes
from .base_score import KMEBaseScore

__all__ = ["ScoreNeuralOperator", "build_sno", "fourier_position_features"]

_ENCODERS = ("fno", "prototype", "none")


def fourier_position_features(grid: Grid, n_freq: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``sin, cos(2 pi f x_i / L_i)`` for ``f = 1..n_freq`` on every axis: ``(2 d n_freq, *grid.shape)``."""
    feats = []
    for i, (x, L) in enumerate(zip(grid.coords, grid.length)):
        view = [1] * grid.ndim
        view[i] = -1
        for f in range(1, n_freq + 1):
            arg = (2 * math.pi * f / L) * x.reshape(view)
            feats += [torch.sin(arg).expand(grid.shape), torch.cos(arg).expand(grid.shape)]
    if not feats:
        return torch.zeros(0, *grid.shape, dtype=dtype)
    return torch.stack(feats).to(dtype)


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class ScoreNeuralOperator(nn.Module):
    """Conditional point-score network ``(x, t, u) -> eta_hat``.

    Parameters
    ----------
    dim : dimension of the points ``x`` (2 for the Gaussian-mixture task).
    encoder : ``"fno"`` (function encoding), ``"prototype"`` (vector encoding) or ``"none"``.
    in_channels : channels of the encoding function (``"fno"``).
    width, modes, n_layers : FNO encoder size; ``modes = (K_1, .., K_d)`` keeps ``|k_i| <= K_i``.
    positional_freqs : position features of modes ``1..positional_freqs`` per axis (``"fno"``).
    pooling : ``"weighted"`` or ``"mean"`` quadrature pooling of the encoder's features (``"fno"``).
    prototype_dim : length of the prototype vector (``"prototype"``).
    code_dim : size of the code (ignored for ``"none"``).
    hidden, decoder_layers : decoder MLP width and number of hidden layers.
    time_embed_dim, time_max_freq : sinusoidal embedding of ``t`` (used as is, ``t`` in ``[0, 1]``).
    conditioning : ``"concat"`` (the code joins the decoder's input only) or ``"film"`` (also a
        scale and shift of every hidden layer, from the code; zero-initialised, so training starts
        from the concat model).
    base : None, or ``{"t_fade": [t0, t1], "pad": int, "clip": float}`` for the hybrid above
        (``pad`` and ``clip`` as in :class:`~fsdiff.sno.base_score.KMEBaseScore`; defaults 4 and 6).
    """

    def __init__(
        self,
        dim: int = 2,
        encoder: str = "fno",
        in_channels: int = 1,
        width: int = 16,
        modes: int | Sequence[int] = (8, 8),
        n_layers: int = 2,
        positional_freqs: int = 3,
        pooling: str = "weighted",
        prototype_dim: int = 0,
        code_dim: int = 32,
        hidden: int = 128,
        decoder_layers: int = 3,
        time_embed_dim: int = 32,
        time_max_freq: float = 100.0,
        conditioning: str = "concat",
        base: dict | None = None,
    ):
        super().__init__()
        if encoder not in _ENCODERS:
            raise ValueError(f"encoder must be one of {_ENCODERS}; got {encoder!r}")
        for name, v, lo in (("dim", dim, 1), ("in_channels", in_channels, 1), ("width", width, 1),
                            ("n_layers", n_layers, 0), ("positional_freqs", positional_freqs, 0),
                            ("prototype_dim", prototype_dim, 0), ("code_dim", code_dim, 1), ("hidden", hidden, 1),
                            ("decoder_layers", decoder_layers, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}; got {v!r}")
        if conditioning not in ("concat", "film"):
            raise ValueError(f"conditioning must be 'concat' or 'film'; got {conditioning!r}")
        if pooling not in ("weighted", "mean"):
            raise ValueError(f"pooling must be 'weighted' or 'mean'; got {pooling!r}")
        self.pooling = pooling
        self.base = _check_base(base, encoder, dim)
        if encoder == "prototype" and prototype_dim < 1:
            raise ValueError("encoder 'prototype' needs prototype_dim >= 1")
        self.dim, self.encoder_type, self.in_channels = dim, encoder, in_channels
        self.width, self.modes, self.n_layers = width, normalize_modes(modes), n_layers
        self.positional_freqs, self.prototype_dim = positional_freqs, prototype_dim
        self._code_dim_arg = code_dim
        self.code_dim = 0 if encoder == "none" else code_dim
        self.hidden, self.decoder_layers = hidden, decoder_layers
        self.time_embed_dim, self.time_max_freq = int(time_embed_dim), float(time_max_freq)
        if encoder == "fno":
            d = len(self.modes)
            self.lift = nn.Linear(in_channels + 2 * d * positional_freqs, width)
            self.spectral = nn.ModuleList(SpectralConv(width, width, self.modes, bias=False) for _ in range(n_layers))
            self.skip = nn.ModuleList(nn.Linear(width, width) for _ in range(n_layers))
            self.to_code = _mlp([width, 2 * width, code_dim])
        elif encoder == "prototype":
            self.proto_mlp = _mlp([prototype_dim, hidden, hidden, code_dim])
        self.time_embed = SinusoidalTimeEmbedding(self.time_embed_dim, self.time_max_freq)
        out_dim = dim + (1 if self.base is not None else 0)   # the hybrid's gate logit
        self.decoder = _mlp([self.code_dim + dim + self.time_embed_dim] + [hidden] * decoder_layers + [out_dim])
        if self.base is not None:   # start from the closed form: residual 0, gate 1
            nn.init.zeros_(self.decoder[-1].weight)
            nn.init.zeros_(self.decoder[-1].bias)
        self.conditioning = conditioning if self.code_dim else "concat"
        if self.conditioning == "film":
            self.film = nn.Linear(self.code_dim, 2 * hidden * decoder_layers)
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    @property
    def spec(self) -> dict:
        """Constructor arguments as plain data, ``"type": "sno"``."""
        return {"type": "sno", "dim": self.dim, "encoder": self.encoder_type, "in_channels": self.in_channels,
                "width": self.width, "modes": list(self.modes), "n_layers": self.n_layers,
                "positional_freqs": self.positional_freqs, "pooling": self.pooling, "prototype_dim": self.prototype_dim,
                "code_dim": self._code_dim_arg, "hidden": self.hidden,
                "decoder_layers": self.decoder_layers, "time_embed_dim": self.time_embed_dim,
                "time_max_freq": self.time_max_freq, "conditioning": self.conditioning,
                "base": None if self.base is None else dict(self.base)}

    # ------------------------------------------------------------------ encoder
    def encode(self, u: torch.Tensor | None, grid: Grid | None = None) -> torch.Tensor:
        """Code of the encoding: ``"fno"``: ``u (B, C, *grid.shape)``; ``"prototype"``: ``u (B, p)`` -> ``(B, code_dim)``.

        For ``"none"`` returns an empty ``(B, 0)`` code (``B = 1`` when ``u`` is None).
        """
        if self.encoder_type == "none":
            B = 1 if u is None else u.shape[0]
            return torch.zeros(B, 0, dtype=self.decoder[0].weight.dtype)
        if u is None:
            raise ValueError(f"encoder {self.encoder_type!r} needs an encoding u")
        if self.encoder_type == "prototype":
            if u.ndim != 2 or u.shape[1] != self.prototype_dim:
                raise ValueError(f"prototype encoding must be (B, {self.prototype_dim}); got {tuple(u.shape)}")
            return self.proto_mlp(u)
        if not isinstance(grid, Grid):
            raise TypeError(f"the FNO encoder needs the encoding's fsdiff Grid; got {type(grid).__name__}")
        if grid.ndim != len(self.modes):
            raise ValueError(f"encoder works on {len(self.modes)}-D grids (modes={self.modes}); got {grid!r}")
        grid.check(u, "u", min_leading=2)
        if u.ndim != grid.ndim + 2 or u.shape[1] != self.in_channels:
            raise ValueError(f"u has shape {tuple(u.shape)}; expected (batch, {self.in_channels}, {', '.join(map(str, grid.shape))})")
        B = u.shape[0]
        pos = fourier_position_features(grid, self.positional_freqs, u.dtype).to(u.device)
        h = torch.cat([u, pos.expand(B, *pos.shape)], dim=1)
        h = self.lift(h.movedim(1, -1)).movedim(-1, 1)
        for l, (conv, skip) in enumerate(zip(self.spectral, self.skip)):
            h = conv(h) + skip(h.movedim(1, -1)).movedim(-1, 1)
            h = torch.nn.functional.gelu(h)
        h = self.to_code(h.movedim(1, -1)).movedim(-1, 1)  # (B, code, *S)
        if self.pooling == "mean":
            return grid.integrate(h) / grid.volume
        w = u[:, :1]
        mass = grid.integrate(w)  # (B, 1)
        if (mass.abs() < 1e-12).any():
            raise ValueError("weighted pooling needs an encoding with non-zero integral (u[:, 0] integrates to ~0)")
        return grid.integrate(w * h) / mass

    # ------------------------------------------------------------------ decoder
    def make_base(self, u: torch.Tensor, kme) -> KMEBaseScore:
        """The closed-form base of a hybrid model for encodings ``u (B, 1, *kme.grid.shape)`` made with ``kme``."""
        if self.base is None:
            raise ValueError("this Score Neural Operator has no base score (it was built with base=None)")
        return KMEBaseScore(u, kme, pad=self.base["pad"], clip=self.base["clip"])

    def decode(self, code: torch.Tensor, x: torch.Tensor, t: torch.Tensor | float,
               base_eta: torch.Tensor | None = None) -> torch.Tensor:
        """``eta_hat`` at points: ``code (B, c)``, ``x (B, P, dim)``, ``t (B, P)`` or float -> ``(B, P, dim)``.

        ``x (B, dim)`` with ``t (B,)`` (one point per code) is accepted too. A hybrid model (``base``
        set) needs ``base_eta``, the faded closed-form prediction at the same points (shape of ``x``,
        from :meth:`make_base` and :meth:`~fsdiff.sno.base_score.KMEBaseScore.eta`).
        """
        if (self.base is None) != (base_eta is None):
            raise ValueError("a hybrid SNO (base set) needs base_eta, and only a hybrid takes it"
                             f" (this model's base: {self.base})")
        if base_eta is not None and tuple(base_eta.shape) != tuple(x.shape):
            raise ValueError(f"base_eta has shape {tuple(base_eta.shape)}; expected that of x, {tuple(x.shape)}")
        single = x.ndim == 2
        if single:
            x = x[:, None]
            base_eta = None if base_eta is None else base_eta[:, None]
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must be (B, P, {self.dim}) or (B, {self.dim}); got {tuple(x.shape)}")
        B, P, _ = x.shape
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        t = t.expand(B, P) if t.ndim == 0 else (t[:, None] if single and t.ndim == 1 else t)
        if tuple(t.shape) != (B, P):
            raise ValueError(f"t has shape {tuple(t.shape)}; expected ({B}, {P}) or a float")
        if code.ndim != 2 or code.shape[1] != self.code_dim or code.shape[0] not in (1, B):
            raise ValueError(f"code must be ({B} or 1, {self.code_dim}); got {tuple(code.shape)}")
        c = code.to(x.dtype)[:, None].expand(B, P, self.code_dim)
        temb = self.time_embed(t.reshape(-1)).reshape(B, P, -1)
        h = torch.cat([c, x, temb], dim=-1)
        if self.conditioning == "concat":
            out = self.decoder(h)
        else:  # Linear, SiLU pairs of the hidden layers, each followed by the code's scale and shift
            film = self.film(code.to(x.dtype))[:, None].chunk(2 * self.decoder_layers, dim=-1)  # (B|1, 1, hidden) each
            layers = list(self.decoder)
            for l in range(self.decoder_layers):
                h = layers[2 * l + 1](layers[2 * l](h)) * (1 + film[2 * l]) + film[2 * l + 1]
            out = layers[-1](h)
        if base_eta is not None:
            out = (1 + torch.tanh(out[..., -1:])) * base_eta.to(out.dtype) + out[..., :-1]
        return out[:, 0] if single else out

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, u: torch.Tensor | None = None,
                grid: Grid | None = None) -> torch.Tensor:
        """``decode(encode(u, grid), x, t)``: predicted noise at points, shape of ``x``."""
        return self.decode(self.encode(u, grid), x, t)


def _check_base(base: dict | None, encoder: str, dim: int) -> dict | None:
    """Validated hybrid settings ``{"t_fade": [t0, t1], "pad": int, "clip": float}``, or None."""
    if base is None:
        return None
    if not isinstance(base, dict) or set(base) - {"t_fade", "pad", "clip"} or "t_fade" not in base:
        raise ValueError(f"base must be None or a dict with t_fade and optionally pad, clip; got {base!r}")
    if encoder != "fno" or dim != 2:
        raise ValueError(f"a base score needs a 2-D 'fno' encoder of kernel mean embeddings; got encoder {encoder!r}, dim {dim}")
    t_fade = [float(v) for v in base["t_fade"]]
    if len(t_fade) != 2 or not 0 <= t_fade[0] < t_fade[1]:
        raise ValueError(f"base t_fade must be [t0, t1] with 0 <= t0 < t1; got {base['t_fade']!r}")
    pad, clip = base.get("pad", 4), float(base.get("clip", 6.0))
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 1 or not clip > 0:
        raise ValueError(f"base pad must be an integer >= 1 and clip positive; got {pad!r}, {clip!r}")
    return {"t_fade": t_fade, "pad": pad, "clip": clip}


def build_sno(spec: dict) -> ScoreNeuralOperator:
    """Rebuild a :class:`ScoreNeuralOperator` from its ``spec`` (``"type": "sno"``); ``ValueError`` otherwise."""
    if not isinstance(spec, dict) or spec.get("type") != "sno":
        raise ValueError(f"expected a Score Neural Operator spec (a dict with type 'sno'); got {spec!r}")
    try:
        return ScoreNeuralOperator(**{k: v for k, v in spec.items() if k != "type"})
    except TypeError as e:
        raise ValueError(f"bad Score Neural Operator spec: {e}") from None
