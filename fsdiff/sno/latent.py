"""The Score Neural Operator's image task: double digits in a latent function space, few-shot generation.

Pieces (issue 14):

* :class:`LatentAutoencoder` -- a convolutional autoencoder (periodic padding: the images live on a
  torus) from ``(1, 28, 56)`` images to a latent *function* ``(C, 7, 14)`` on :data:`LATENT_GRID`
  (lengths ``(1, 2)``, the image domain), trained with a light regulariser: decoding
  ``z + noise_std * xi`` and a small ``latent_weight * |z|²`` keep the latent at unit scale and the
  decoder tolerant of the diffusion's errors;
* :func:`prototype` -- the distribution of a class encoded as a function: the mean latent of K
  support images (K = 1 is one-shot);
* the latent score operator is an :class:`~fsdiff.models.FNOScore` with ``cond_channels = C`` that
  takes the prototype as its conditioning function, trained by :func:`train_latent_sno`
  (conditional DSM over the training classes, K drawn per batch element);
* :func:`few_shot_sample` -- K images of a class -> ``n`` new images of it.
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from ..grid import Grid
from ..losses import dsm_loss
from ..sampling import sample
from ..sde import SDE
from ..training.fit import fit
from .augment import SupportAugmentation
from .embedding import prototype_encoding
from .prototype_encoder import PrototypeEncoder, build_prototype_encoder

__all__ = ["LATENT_GRID", "LatentAutoencoder", "build_autoencoder", "train_autoencoder", "prototype",
           "LatentSNOConfig", "train_latent_sno", "few_shot_sample", "guided", "sample_images", "encode_by_class", "save_few_shot", "load_few_shot",
           "recommended_guidance", "recommended_augmentation", "augmented_latents", "PrototypeScore", "build_prototype_score", "residual_statistics"]

#: the latent grid: 7 x 14 points on the image domain [0, 1) x [0, 2)
LATENT_GRID = Grid((7, 14), (1.0, 2.0))


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, padding_mode="circular")


class LatentAutoencoder(nn.Module):
    """``encode: (B, 1, 28, 56) -> (B, C, 7, 14)``, ``decode: (B, C, 7, 14) -> (B, 1, 28, 56)``.

    Two stride-2 stages each way (nearest upsampling + convolution in the decoder), SiLU, periodic
    padding. ``spec`` is plain data (:func:`build_autoencoder`).

    ``band_limited``: ``encode`` drops the Nyquist column of the even 14-point axis, as fsdiff does for
    every function on an even grid (:mod:`fsdiff.grid`). The Q-Wiener noise has no Nyquist mode, so a
    latent that kept it would carry an un-noised trace of the data at every diffusion time in training,
    which sampling can never reproduce (it starts with none and never makes any).
    """

    def __init__(self, latent_channels: int = 4, width: int = 24, band_limited: bool = True):
        super().__init__()
        for name, v in (("latent_channels", latent_channels), ("width", width)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}")
        if not isinstance(band_limited, bool):
            raise ValueError(f"band_limited must be True or False; got {band_limited!r}")
        self.latent_channels, self.width, self.band_limited = latent_channels, width, band_limited
        w = width
        self.encoder = nn.Sequential(_conv(1, w), nn.SiLU(), _conv(w, w, 3, 2), nn.SiLU(), _conv(w, 2 * w), nn.SiLU(),
                                     _conv(2 * w, 2 * w, 3, 2), nn.SiLU(), _conv(2 * w, latent_channels))
        self.decoder = nn.Sequential(_conv(latent_channels, 2 * w), nn.SiLU(), nn.Upsample(scale_factor=2),
                                     _conv(2 * w, w), nn.SiLU(), nn.Upsample(scale_factor=2), _conv(w, w), nn.SiLU(),
                                     _conv(w, 1))

    @property
    def spec(self) -> dict:
        return {"type": "latent_autoencoder", "latent_channels": self.latent_channels, "width": self.width,
                "band_limited": self.band_limited}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 56):
            raise ValueError(f"images must be (B, 1, 28, 56) double digits on the native grid; got {tuple(x.shape)}")
        z = self.encoder(x)
        if self.band_limited:
            z = LATENT_GRID.irfft(LATENT_GRID.rfft(z) * LATENT_GRID.mode_mask.to(z.device))
        return z

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 4 or tuple(z.shape[1:]) != (self.latent_channels, *LATENT_GRID.shape):
            raise ValueError(f"latents must be (B, {self.latent_channels}, 7, 14); got {tuple(z.shape)}")
        return self.decoder(z)


def build_autoencoder(spec: dict) -> LatentAutoencoder:
    """Rebuild from ``spec`` (``"type": "latent_autoencoder"``); ``ValueError`` otherwise. A spec without
    ``band_limited`` (written before it existed) rebuilds the unprojected encoder it was trained as."""
    if not isinstance(spec, dict) or spec.get("type") != "latent_autoencoder":
        raise ValueError(f"expected a latent autoencoder spec (type 'latent_autoencoder'); got {spec!r}")
    return LatentAutoencoder(**{"band_limited": False, **{k: v for k, v in spec.items() if k != "type"}})


def train_autoencoder(model: LatentAutoencoder, draw: Callable[[int, torch.Generator], torch.Tensor], steps: int,
                      generator: torch.Generator, batch_size: int = 64, lr: float = 2e-3, noise_std: float = 0.1,
                      latent_weight: float = 1e-3, log=None, log_every: int = 500) -> list[float]:
    """Train on images ``draw(n, generator) -> (n, 1, 28, 56)``; loss ``|dec(z + noise) - x|² + w |z|²``."""

    def loss_of_step(_: int) -> torch.Tensor:
        x = draw(batch_size, generator)
        z = model.encode(x)
        xi = torch.randn(z.shape, generator=generator)
        rec = model.decode(z + noise_std * xi)
        return (rec - x).square().mean() + latent_weight * z.square().mean()

    model.train()
    result = fit(model.parameters(), loss_of_step, steps, lr, name="autoencoder", log=log, log_every=log_every)
    model.eval()
    return result.losses


def prototype(latents: torch.Tensor) -> torch.Tensor:
    """The encoding of a class: the mean of its support latents ``(K, C, 7, 14) -> (C, 7, 14)``; K >= 1."""
    if latents.ndim != 4 or latents.shape[0] < 1:
        raise ValueError(f"support latents must be (K, C, 7, 14) with K >= 1; got {tuple(latents.shape)}")
    return prototype_encoding(latents.flatten(1)).reshape(latents.shape[1:])


@torch.no_grad()
def encode_by_class(ae: LatentAutoencoder, images: torch.Tensor, labels: torch.Tensor,
                    batch: int = 512) -> dict[int, torch.Tensor]:
    """Latents of ``images (N, 1, 28, 56)`` grouped by class: ``{class: (n_c, C, 7, 14)}``."""
    z = _encode(ae, images, batch)
    return {int(c): z[labels == c] for c in labels.unique().tolist()}


def _encode(ae: LatentAutoencoder, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """``images (N, 1, 28, 56) -> (N, C, 7, 14)``, encoded ``batch`` at a time."""
    return torch.cat([ae.encode(images[i:i + batch]) for i in range(0, images.shape[0], batch)])


@torch.no_grad()
def augmented_latents(ae: LatentAutoencoder, images: torch.Tensor, labels: torch.Tensor, augment: SupportAugmentation,
                      copies: int, generator: torch.Generator, batch: int = 512) -> dict[int, torch.Tensor]:
    """Latents of ``copies`` random deformations of each image, grouped by class as :func:`encode_by_class`:
    ``{class: (copies, n_c, C, 7, 14)}``, copy ``d`` of the class's ``i``-th image at ``[d, i]``."""
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise ValueError(f"copies must be a positive integer; got {copies!r}")
    banks = [encode_by_class(ae, augment(images, generator), labels, batch) for _ in range(copies)]
    return {c: torch.stack([b[c] for b in banks]) for c in banks[0]}


@dataclass(frozen=True)
class LatentSNOConfig:
    """Conditional DSM of the latent score operator: ``steps`` Adam steps of ``batch_size`` latents;
    each element's prototype averages ``K`` support latents of its class, ``K`` drawn from ``shots``
    (the target latent is never among its supports)."""

    steps: int = 4000
    batch_size: int = 64
    lr: float = 2e-3
    shots: tuple[int, ...] = (1, 5, 50)
    time_sampling: str = "edm"
    ema_decay: float = 0.999
    eps: float = 1e-3
    weighting: str = "none"   # "precond" for a PrototypeScore (the preconditioner's loss weight)
    drop_prototype: float = 0.0   # fraction of elements trained with the null (zero) prototype, for guidance
    prototype_noise: float = 0.0  # conditioning augmentation: N(0, (a std_class / sqrt(K))^2) added to training prototypes


def _draw_batch(latents: dict[int, torch.Tensor], classes: Sequence[int], cfg: LatentSNOConfig,
                g: torch.Generator, support_latents: dict[int, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    cls = torch.tensor(list(classes))[torch.randint(len(classes), (cfg.batch_size,), generator=g)].tolist()
    shots = torch.tensor(cfg.shots)[torch.randint(len(cfg.shots), (cfg.batch_size,), generator=g)].tolist()
    x0, cond = [], []
    for c, k in zip(cls, shots):
        pool = latents[c]
        idx = torch.randperm(pool.shape[0], generator=g)[: k + 1]
        x0.append(pool[idx[0]])
        if support_latents is None:
            supports = pool[idx[1:]]
        else:  # a random deformed copy of each support image
            bank = support_latents[c]
            supports = bank[torch.randint(bank.shape[0], (k,), generator=g), idx[1:]]
        p = prototype(supports)
        if cfg.prototype_noise > 0:  # blur what a K-shot prototype tells of its own supports
            p = p + (cfg.prototype_noise * float(pool.std()) / math.sqrt(k)) * torch.randn(p.shape, generator=g)
        cond.append(p)
    x0, cond = torch.stack(x0), torch.stack(cond)
    if cfg.drop_prototype > 0:  # the null prototype (zeros) teaches the unconditional score used by guidance
        drop = torch.rand(cfg.batch_size, generator=g) < cfg.drop_prototype
        cond = torch.where(drop.view(-1, 1, 1, 1), torch.zeros_like(cond), cond)
    return x0, cond


def train_latent_sno(model: nn.Module, sde: SDE, latents: dict[int, torch.Tensor], classes: Sequence[int],
                     cfg: LatentSNOConfig, generator: torch.Generator, log=None, log_every: int = 500,
                     draw: Callable[[torch.Generator], tuple[torch.Tensor, object]] | None = None,
                     support_latents: dict[int, torch.Tensor] | None = None):
    """Conditional DSM over ``classes`` (their latents by class); returns ``(ema model, losses)``.

    ``support_latents`` (:func:`augmented_latents`, ``{class: (D, n_c, C, 7, 14)}``): prototypes average
    randomly deformed copies of the support images, the targets stay undeformed (support augmentation:
    the model learns that a support's slant, size and stroke need not be the class's).
    ``draw(generator) -> (x0 (B, C, 7, 14), cond)`` replaces the default batch (targets and their K-shot
    prototypes); ``model(x, t, grid, cond)`` receives ``cond`` as drawn (e.g. class labels for a baseline)."""
    if draw is None:
        short = [c for c in classes if latents[c].shape[0] < max(cfg.shots) + 1]
        if short:
            raise ValueError(f"classes {short} have fewer than {max(cfg.shots) + 1} latents (the largest K plus a target)")
        if support_latents is not None:
            bad = [c for c in classes if c not in support_latents or support_latents[c].ndim != latents[c].ndim + 1
                   or support_latents[c].shape[1:] != latents[c].shape]
            if bad:
                raise ValueError(f"support_latents must hold (D, n_c, C, 7, 14) deformed copies of each class's latents "
                                 f"(n_c, C, 7, 14); classes {bad} do not")

        def draw(g: torch.Generator):
            return _draw_batch(latents, classes, cfg, g, support_latents)

    class _Bound:  # the model with this batch's prototypes, and the preconditioner's loss weight if any
        def __init__(self, cond):
            self.cond = cond
            if hasattr(model, "pre"):
                self.loss_weight = model.pre.loss_weight

        def __call__(self, x, t, g):
            return model(x, t, g, self.cond)

    def loss_of_step(_: int) -> torch.Tensor:
        x0, cond = draw(generator)
        return dsm_loss(_Bound(cond), x0, sde, LATENT_GRID, generator, time_sampling=cfg.time_sampling,
                        weighting=cfg.weighting, eps=cfg.eps).mean()

    model.train()
    result = fit(model.parameters(), loss_of_step, cfg.steps, cfg.lr, ema_of=model, ema_decay=cfg.ema_decay,
                 name="latent sno", log=log, log_every=log_every)
    model.eval()
    return result.ema.module, result.losses


@torch.no_grad()
def few_shot_sample(model: nn.Module, ae: LatentAutoencoder, sde: SDE, support: torch.Tensor, n: int,
                    generator: torch.Generator | None = None, steps: int = 24, sampler: str = "ode",
                    time_grid: str = "edm", residual_scale: float = 1.0, guidance: float = 1.0,
                    guidance_interval: tuple[float, float] | None = None,
                    augment: SupportAugmentation | None = None) -> torch.Tensor:
    """``n`` new images of the class of ``support (K, 1, 28, 56)``: ``(n, 1, 28, 56)`` decoded samples.

    ``residual_scale`` (a :class:`PrototypeScore` only): the weight of the learned residual.
    ``guidance`` ``w``: classifier-free guidance ``eta_null + w (eta_prototype - eta_null)`` with the
    null (zero) prototype, for a model trained with ``drop_prototype > 0``; 1 is plain conditioning.
    ``guidance_interval`` ``(t_lo, t_hi)``: guide only at diffusion times in that interval, plain
    conditioning elsewhere (guidance in a limited interval, Kynkaanniemi et al. 2024: the class is
    fixed at the middle noise levels; at low noise guidance only narrows the samples).
    ``augment``: each of the ``n`` images is conditioned on the prototype of its own randomly deformed
    copy of the K supports (:class:`~fsdiff.sno.augment.SupportAugmentation`, drawn from ``generator``),
    instead of all on the supports' one prototype: the samples then do not inherit the supports' slant,
    size and stroke."""
    if support.ndim != 4 or support.shape[0] < 1 or tuple(support.shape[1:]) != (1, 28, 56):
        raise ValueError(f"support must be (K, 1, 28, 56) double-digit images with K >= 1; got {tuple(support.shape)}")
    if not math.isfinite(guidance) or guidance < 0:
        raise ValueError(f"guidance must be a finite number >= 0 (1: plain conditioning); got {guidance!r}")
    if guidance_interval is not None:
        lo, hi = (float(v) for v in guidance_interval)
        if not 0 <= lo < hi:
            raise ValueError(f"guidance_interval must be (t_lo, t_hi) with 0 <= t_lo < t_hi; got {guidance_interval!r}")
    if augment is not None and not isinstance(augment, SupportAugmentation):
        raise TypeError(f"augment must be a SupportAugmentation or None; got {type(augment).__name__}")
    if augment is None or augment.strength == 0:  # strength 0 is the identity: the one prototype
        cond = prototype(ae.encode(support.float()))[None]
    else:
        if generator is None:
            raise ValueError("support augmentation draws its deformations from a generator; pass generator=")
        k = support.shape[0]
        deformed = augment(support.float().repeat(n, 1, 1, 1), generator)  # (n K, 1, 28, 56): sample i's copies
        z = _encode(ae, deformed)
        cond = prototype_encoding(z.reshape(n, k, -1)).reshape(n, *z.shape[1:])
    kw = {} if residual_scale == 1 else {"residual_scale": float(residual_scale)}

    def batch_cond(x: torch.Tensor) -> torch.Tensor:
        if cond.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"{cond.shape[0]} per-sample prototypes for a batch of {x.shape[0]} (augmented sampling "
                             "evaluates the whole batch at once)")
        return cond.expand(x.shape[0], *cond.shape[1:])

    eta = guided(lambda x, t, g: model(x, t, g, batch_cond(x), **kw),
                 lambda x, t, g: model(x, t, g, torch.zeros_like(batch_cond(x)), **kw), guidance, guidance_interval)
    return sample_images(eta, sde, ae, n, generator, steps, sampler, time_grid)


def guided(eta_cond: Callable, eta_null: Callable, guidance: float,
           interval: tuple[float, float] | None = None) -> Callable:
    """Classifier-free guidance: ``eta(x, t, grid) = eta_null + w (eta_cond - eta_null)``, with ``w = guidance`` at
    diffusion times in ``interval`` (every time when None) and 1 (``eta_cond`` alone) elsewhere; ``eta_null`` is
    only evaluated where ``w != 1``. ``x (B, C, *grid.shape)``, ``t`` a float or ``(B,)``."""
    lo, hi = (None, None) if interval is None else (float(interval[0]), float(interval[1]))

    def eta(x, t, g):
        e = eta_cond(x, t, g)
        if guidance == 1:
            return e
        w = torch.full((x.shape[0],), float(guidance), dtype=e.dtype)
        if lo is not None:
            tt = torch.as_tensor(t, dtype=torch.float64).reshape(-1).expand(x.shape[0])
            w = torch.where((tt >= lo) & (tt <= hi), w, torch.ones_like(w))
            if bool((w == 1).all()):
                return e
        e0 = eta_null(x, t, g)
        return e0 + w.view(-1, *[1] * (e.ndim - 1)) * (e - e0)

    return eta


@torch.no_grad()
def sample_images(eta: Callable, sde: SDE, ae: LatentAutoencoder, n: int, generator: torch.Generator | None = None,
                  steps: int = 24, sampler: str = "ode", time_grid: str = "edm") -> torch.Tensor:
    """``n`` decoded images ``(n, 1, 28, 56)`` from a latent score ``eta(x (B, C, 7, 14), t (B,), grid) -> eta_hat``
    (the sampler of :func:`few_shot_sample`, for any conditioning)."""
    z = sample(eta, sde, LATENT_GRID, n,
               channels=ae.latent_channels, sampler=sampler, steps=steps, time_grid=time_grid, generator=generator)
    return ae.decode(z)


FEW_SHOT_KIND = "sno_latent_few_shot"


def save_few_shot(path, ae: LatentAutoencoder, sno: nn.Module, sde: SDE, config: dict | None = None,
                  step: int = 0):
    """One plain-data file holding the autoencoder, the latent score operator and its SDE."""
    from ..io import save_checkpoint

    return save_checkpoint(path, {"kind": FEW_SHOT_KIND, "config": config or {}, "step": int(step),
                                  "model": {"spec": sno.spec, "state_dict": sno.state_dict()},
                                  "autoencoder": {"spec": ae.spec, "state_dict": ae.state_dict()},
                                  "sde": sde.to_dict()})


def recommended_guidance(config: Mapping | None) -> float:
    """The guidance weight a few-shot checkpoint's ``config`` recommends (``sampling.guidance``; 1 when absent).

    The study records it for a model trained with ``drop_prototype > 0``; 1 is plain conditioning.
    ``config`` is the fourth item of ``load_few_shot(path, with_config=True)``."""
    return float((config or {}).get("sampling", {}).get("guidance", 1.0))


def recommended_guidance_interval(config: Mapping | None) -> tuple[float, float] | None:
    """The guidance interval ``(t_lo, t_hi)`` a few-shot checkpoint's ``config`` recommends
    (``sampling.guidance_interval``; None, guidance at every time, when absent)."""
    v = (config or {}).get("sampling", {}).get("guidance_interval")
    return None if v is None else (float(v[0]), float(v[1]))


def recommended_augmentation(config: Mapping | None, shots: int) -> SupportAugmentation | None:
    """The support augmentation a few-shot checkpoint's ``config`` recommends for ``shots`` (K) support images.

    ``sampling.support_augmentation`` is one dict of :class:`~fsdiff.sno.augment.SupportAugmentation`
    fields, or a list of them, each with an optional ``max_shots``: the first entry with
    ``K <= max_shots`` (or no ``max_shots``) applies. None (no augmentation) when nothing applies, the
    key is absent or the strength is 0."""
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ValueError(f"shots must be a positive integer (the number of support images); got {shots!r}")
    v = (config or {}).get("sampling", {}).get("support_augmentation")
    for entry in [] if v is None else [v] if isinstance(v, Mapping) else list(v):
        entry = dict(entry)
        limit = entry.pop("max_shots", None)
        if limit is None or shots <= int(limit):
            aug = SupportAugmentation.from_dict(entry)
            return None if aug.strength == 0 else aug
    return None


def load_few_shot(path, with_config: bool = False):
    """``(autoencoder, latent score operator, sde)`` from :func:`save_few_shot`'s file (``weights_only=True``);
    with ``with_config``, also the file's ``config`` dict (the study settings, the recommended guidance)."""
    from ..errors import CheckpointError
    from ..io import load_checkpoint, load_state
    from ..models import build_model
    from ..sde import sde_from_dict

    ck = load_checkpoint(path)
    if ck.get("kind") != FEW_SHOT_KIND or "autoencoder" not in ck or "sde" not in ck:
        raise CheckpointError(f"{path} is not a few-shot double-digit checkpoint (kind {ck.get('kind')!r}; expected "
                              f"{FEW_SHOT_KIND!r}, written by resolution_studies/sno_mnist2.py)")
    try:
        ae = build_autoencoder(ck["autoencoder"]["spec"])
        spec = ck["model"]["spec"]
        sno = build_prototype_score(spec) if spec.get("type") == "prototype_score" else build_model(spec)
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: bad model spec ({e})") from None
    load_state(ae, ck["autoencoder"]["state_dict"], path, ck["autoencoder"]["spec"], ae.spec)
    load_state(sno, ck["model"]["state_dict"], path, ck["model"]["spec"], sno.spec)
    loaded = (ae.eval(), sno.eval(), sde_from_dict(ck["sde"]))
    return (*loaded, dict(ck.get("config") or {})) if with_config else loaded


class _WithPrototype(nn.Module):
    """The residual network of :class:`PrototypeScore`: the preconditioner's own conditioning, then the
    prototype (or its :class:`~fsdiff.sno.prototype_encoder.PrototypeEncoder` encoding)."""

    def __init__(self, net: nn.Module, channels: int, encoder: PrototypeEncoder | None = None):
        super().__init__()
        self.net, self.in_channels, self.cond_channels = net, channels, channels
        self.encoder = encoder
        self.prototype: torch.Tensor | None = None

    @property
    def spec(self) -> dict:
        return self.net.spec

    def forward(self, x, t, grid, cond):
        p = self.prototype.to(cond.dtype)
        return self.net(x, t, grid, torch.cat([cond, p if self.encoder is None else self.encoder(p, grid)], dim=1))


class PrototypeScore(nn.Module):
    """A latent score operator in the spectral preconditioner, conditioned on a class prototype.

    ``eta_hat(x_t, t, grid, prototype)``: the exact per-mode Gaussian posterior of the latent bank's
    statistics plus a residual ``net`` (``cond_channels = 2 C``: the preconditioner's Wiener estimate
    and the prototype), scaled by the posterior std, as the shipped image models. ``x_t, prototype``:
    ``(B, C, *grid.shape)``.

    ``encoder`` (a :class:`~fsdiff.sno.prototype_encoder.PrototypeEncoder`): the network sees the
    prototype's learned encoding (local features and a global code) instead of the raw prototype;
    then ``cond_channels = C + encoder.out_dim``. The Gaussian part still uses the raw prototype.

    ``centred=True`` models the latent as ``prototype + y``: the Gaussian part is centred on the
    prototype, with ``statistics`` fitted to the residuals ``y = z - prototype``
    (:func:`residual_statistics`). Since ``x_t - m(t) prototype = m(t) y + s(t) eta``, the noise is the
    same and only the input shifts; the prototype then fixes the sample's coarse shape at large t
    instead of having to be learned through the residual network.
    """

    def __init__(self, net: nn.Module, sde: SDE, statistics, centred: bool = False,
                 encoder: PrototypeEncoder | None = None):
        super().__init__()
        from ..models import SpectralPreconditioner

        channels = statistics.channels
        if encoder is not None and (not isinstance(encoder, PrototypeEncoder) or encoder.channels != channels):
            raise ValueError(f"encoder must be a PrototypeEncoder of {channels}-channel prototypes; got {encoder!r}")
        extra = channels if encoder is None else encoder.out_dim
        if getattr(net, "cond_channels", None) != channels + extra:
            what = "prototype" if encoder is None else "prototype encoding"
            raise ValueError(f"the residual network needs cond_channels = {channels + extra} (Wiener estimate + {what})")
        self.inner = _WithPrototype(net, channels, encoder)
        self.pre = SpectralPreconditioner(self.inner, sde, statistics)
        self.in_channels = channels
        self.centred = bool(centred)

    @property
    def spec(self) -> dict:
        enc = self.inner.encoder
        return {"type": "prototype_score", "net": self.inner.net.spec, "sde": self.pre.sde.to_dict(),
                "statistics": self.pre.statistics.spec, "centred": self.centred,
                "encoder": None if enc is None else enc.spec}

    def forward(self, x_t: torch.Tensor, t, grid: Grid, prototype: torch.Tensor,
                residual_scale: float = 1.0) -> torch.Tensor:
        """``eta_hat (B, C, *grid.shape)``; ``residual_scale`` scales the network's part (0: the Gaussian
        part alone, the exact score of ``N(prototype + mean, statistics)`` for a centred model)."""
        if prototype.shape != x_t.shape:
            raise ValueError(f"prototype must have the shape of x_t {tuple(x_t.shape)}; got {tuple(prototype.shape)}")
        if self.centred:
            from .._checks import batch_times

            tt = batch_times(t, x_t.shape[0], torch.float64, torch.device("cpu"))
            m = self.pre.sde.mean_scale(tt).reshape(-1, *([1] * (x_t.ndim - 1))).to(x_t.device, x_t.dtype)
            x_t = x_t - m * prototype
        if residual_scale == 0:
            return self.pre.gaussian_parts(x_t, t, grid)[0].to(x_t.dtype)
        self.inner.prototype = prototype
        try:
            if residual_scale == 1:
                return self.pre(x_t, t, grid)
            p, resid = self.pre._split(x_t, t, grid)
            return (p["eta_g"].to(x_t.dtype) + residual_scale * resid).to(x_t.dtype)
        finally:
            self.inner.prototype = None


def residual_statistics(latents: dict[int, torch.Tensor], classes: Sequence[int], shots: Sequence[int], n: int,
                        generator: torch.Generator) -> "SpectralStatistics":
    """Per-mode statistics of ``z - prototype`` over ``n`` draws (class, K in ``shots``, target not in the support),
    for a ``centred`` :class:`PrototypeScore`."""
    from ..data.statistics import SpectralStatistics

    cfg = LatentSNOConfig(batch_size=n, shots=tuple(shots))
    x0, cond = _draw_batch(latents, classes, cfg, generator)
    return SpectralStatistics(LATENT_GRID.shape, LATENT_GRID.length, x0.shape[1]).fit(x0 - cond)


def build_prototype_score(spec: dict) -> PrototypeScore:
    from ..data.statistics import SpectralStatistics
    from ..models import build_model
    from ..sde import sde_from_dict

    enc = spec.get("encoder")
    return PrototypeScore(build_model(spec["net"]), sde_from_dict(spec["sde"]), SpectralStatistics.from_spec(spec["statistics"]),
                          centred=bool(spec.get("centred", False)),
                          encoder=None if enc is None else build_prototype_encoder(enc))
