"""The ``fsdiff`` command line. Only this module (and :mod:`fsdiff.config`) parses anything."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..errors import FsdiffError
from .runtime import tune_allocator

__all__ = ["main"]


def _set_threads(args: argparse.Namespace) -> None:
    import torch

    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be a positive integer; got {threads}")
        torch.set_num_threads(threads)


def _check_outputs(*paths: Path) -> None:
    """Refuse unwritable outputs before any expensive work (sampling, training)."""
    from ..io import check_writable

    for p in paths:
        check_writable(p)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import format_demo_table, format_noise_table, noise_demo, train_sample_demo

    out = Path(args.out)
    _check_outputs(out / "demo.png", out / "noise" / "noise.png", out / "mnist" / "digits.png")
    _download_if_asked(args, [] if args.data == "synthetic" else [args.data])
    t0 = time.perf_counter()
    table = noise_demo(out / "noise", resolutions=args.noise_resolutions, n=args.n_noise, seed=args.seed)
    print("1. Noise: one seed, four resolutions (pointwise variance and mean squared L² norm)")
    print(format_noise_table(table))
    print(f"   trace class converges as N grows; white noise grows like N². ({time.perf_counter() - t0:.1f} s)")
    print(f"   outputs: {out / 'noise'}/noise.png, noise_<N>.nc, noise_table.json")
    if args.noise_only:
        return 0
    from .demo import PRETRAINED_MNIST, pretrained_demo
    from ..eval.quality import format_quality_table

    if PRETRAINED_MNIST.is_file() and not args.no_pretrained:
        print(f"\n2. The shipped MNIST score operator ({PRETRAINED_MNIST.name}) sampled at 28², 56² and 112²")
        pre = pretrained_demo(out / "mnist", n=args.n_pretrained, progress=not args.quiet)
        if pre["quality_unavailable"]:
            print(f"   (quality figures need the MNIST test split: {pre['quality_unavailable']})")
            for r in pre["rows"]:
                print(f"   {r['grid']:>4}²: power beyond |k| = 13: {r['power_beyond_13']:.2e}")
        else:
            print(format_quality_table(pre["rows"]))
        print(f"   sampled in {pre['sample_seconds']:.0f} s; outputs: {out / 'mnist'}/digits.png, samples_<N>.nc/.png, quality.json")
    overrides = list(args.set)
    if args.steps is not None:
        overrides.append(f"training.steps={args.steps}")
    print(f"\n3. Training a score operator on {args.data} data, then sampling at 1x, 2x and 4x its resolution")
    summary = train_sample_demo(out, config_path=args.config, data=args.data, overrides=overrides, n=args.n,
                                sampler=args.sampler, steps=args.sample_steps, seed=args.seed, progress=not args.quiet)
    print(f"   trained in {summary['train_seconds']:.0f} s, sampled in {summary['sample_seconds']:.0f} s "
          f"({summary['sampler']}, {summary['steps']} steps, n={summary['n']})")
    print(format_demo_table(summary))
    print(f"   outputs: {out}/demo.png, samples_<N>.nc/.png, metrics.json, run/ (config, checkpoints, loss.png)")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..training import train_from_config

    cfg = load_config(args.config, args.set)
    _download_if_asked(args, _mnist_kinds(cfg.data.spec()))
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / cfg.name
    _check_outputs(run_dir / "config.toml")
    ckpt = train_from_config(cfg, run_dir, resume=args.resume, progress=not args.quiet, force_config=args.force_config,
                             device=args.device)
    from ..training import current_world

    if current_world().is_main:
        print(f"run directory: {run_dir}\nfinal checkpoint: {ckpt}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from .generate import output_paths, parse_resolution, sample_run
    from ..training import load_run

    if args.steps < 1:
        raise ValueError(f"--steps must be at least 1; got {args.steps}")
    if args.n < 1:
        raise ValueError(f"--n must be at least 1; got {args.n}")
    from ..sampling import parse_memory
    from ..training import resolve_device

    max_memory = parse_memory(args.max_memory) if args.max_memory is not None else None
    device = resolve_device(args.device)
    model, sde, grid, cfg = load_run(args.run)
    model = model.to(device)
    shapes = [parse_resolution(r, grid.ndim) for r in (args.resolution or [grid.shape[0]])]
    paths = output_paths(args.out, shapes)
    _check_outputs(*paths, *(p.with_suffix(".png") for p in paths))
    from ..data import dataset_from_dict

    data_spec = cfg.data.spec()
    channels = int(getattr(dataset_from_dict(data_spec), "channels", 1))  # data sets load lazily: no data needed
    if max_memory is not None:  # every resolution fits the budget, or nothing is sampled
        from ..grid import Grid
        from ..sampling import chunk_size_for

        for shape in shapes:
            chunk_size_for(model, Grid(shape, grid.length), args.n, channels, max_memory)
    sample_run(model, sde, grid, shapes, args.n, channels, sampler=args.sampler, steps=args.steps, seed=args.seed,
               out=args.out, chunk_size=args.chunk_size, progress=not args.quiet,
               attrs={"checkpoint": str(args.run)}, time_grid=args.time_grid,
               cmap="gray" if data_spec.get("type") == "mnist" else "viridis", max_memory=max_memory, device=device)
    for p in output_paths(args.out, shapes):
        print(f"wrote {p} and {p.with_suffix('.png')}")
    return 0


def _netcdf_output(args: argparse.Namespace) -> Path:
    """``--out`` of a sampling command: checked (``.nc``, writable, with its PNG) before any work; also ``--n``, ``--steps``."""
    if args.n < 1 or args.steps < 1:
        raise ValueError(f"--n and --steps must be at least 1; got {args.n}, {args.steps}")
    out = Path(args.out)
    if out.suffix != ".nc":
        raise ValueError(f"--out must end in .nc; got {out}")
    _check_outputs(out, out.with_suffix(".png"))
    return out


def _conditional(args: argparse.Namespace, make_condition) -> int:
    """Shared part of ``superres`` and ``inpaint``: load, check outputs, build the condition, sample, write."""
    from ..grid import Grid
    from ..training import load_run
    from .condition import condition_run, read_field
    from .generate import parse_resolution

    out = _netcdf_output(args)
    model, sde, grid, _ = load_run(args.run)
    u, obs_grid = read_field(args.input, grid.length)
    target = Grid(parse_resolution(args.resolution, grid.ndim) if args.resolution else obs_grid.shape, grid.length)
    condition = make_condition(u, obs_grid)
    condition_run(model, sde, target, condition, u, obs_grid, args.n, args.steps, args.seed, out, args.chunk_size,
                  not args.quiet, {"checkpoint": str(args.run), "input": str(args.input)})
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


def _cmd_superres(args: argparse.Namespace) -> int:
    from ..conditional import LowModes

    return _conditional(args, LowModes)


def _cmd_inpaint(args: argparse.Namespace) -> int:
    from ..conditional import Mask
    from .condition import read_mask

    def make(u, g):
        return Mask(read_mask(args.mask, g.shape, g.length), u[0], args.noise_std, g)

    return _conditional(args, make)


def _cmd_sno_sample(args: argparse.Namespace) -> int:
    import torch

    from ..data import DOUBLE_GRID
    from ..grid import to_dataarray
    from ..io import write_netcdf
    from ..sno.augment import SupportAugmentation
    from ..sno.latent import (few_shot_sample, load_few_shot, recommended_augmentation, recommended_guidance,
                              recommended_guidance_interval)
    from .condition import read_images

    out = _netcdf_output(args)
    ae, sno, sde, config = load_few_shot(args.run, with_config=True)
    guidance = recommended_guidance(config) if args.guidance is None else args.guidance
    interval = recommended_guidance_interval(config) if args.guidance_interval is None else tuple(args.guidance_interval)
    support = read_images(args.support, DOUBLE_GRID.shape)
    augment = (recommended_augmentation(config, support.shape[0]) if args.augment is None
               else SupportAugmentation(strength=args.augment))
    x = few_shot_sample(sno, ae, sde, support, args.n, generator=torch.Generator().manual_seed(args.seed),
                        steps=args.steps, guidance=guidance, guidance_interval=interval,
                        augment=augment)
    grid = DOUBLE_GRID
    write_netcdf(out, to_dataarray(x, grid, "samples", {"checkpoint": str(args.run), "shots": support.shape[0],
                                                        "steps": args.steps, "seed": args.seed,
                                                        "guidance": guidance,
                                                        "guidance_interval": list(interval or (0.0, 1.0)),
                                                        "support_augmentation": 0.0 if augment is None
                                                        else augment.strength}).to_dataset())
    from ..plotting import field_panels, save_figure

    k = min(args.n, 8)
    rows = [("support", [(f"#{i}", support[i, 0], grid) for i in range(min(support.shape[0], 8))]),
            ("generated", [(f"#{i}", x[i, 0].clamp(0, 1), grid) for i in range(k)])]   # pixels are in [0, 1]; the decoder overshoots
    save_figure(field_panels(rows, shared_color=True, cmap="gray", images=True), out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')} ({args.n} images from K = {support.shape[0]} support images)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from ..training import export_run

    out = Path(args.out)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; pass --force to overwrite it")
    _check_outputs(out)
    path = export_run(args.run, out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB: EMA weights, config, SDE, data statistics)")
    return 0


def _download_if_asked(args: argparse.Namespace, kinds: list[str]) -> None:
    """``--download``: fetch the MNIST-type files the run needs into the data root (default ~/.cache/fsdiff/data)."""
    if not getattr(args, "download", False) or not kinds:
        return
    from ..data.mnist import DATA_ENV_VAR, download_mnist

    root = Path(os.environ.get(DATA_ENV_VAR) or Path("~/.cache/fsdiff/data").expanduser())
    os.environ[DATA_ENV_VAR] = str(root)
    for kind in kinds:
        for split in ("train", "test"):
            download_mnist(root, kind, split)


def _mnist_kinds(data_spec: dict) -> list[str]:
    return [data_spec.get("kind", "mnist")] if data_spec.get("type") == "mnist" else []


def _cmd_invariance(args: argparse.Namespace) -> int:
    from ..eval.invariance import evaluate_invariance

    out = Path(args.out) if args.out else Path(args.run) / "invariance"
    _check_outputs(out / "invariance.nc")
    evaluate_invariance(args.run, args.resolutions, n_samples=args.n, sampler=args.sampler, steps=args.steps,
                        seed=args.seed, out_dir=out, progress=not args.quiet)
    print(f"wrote {out}/invariance.nc, invariance.png, invariance.txt")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ..sampling import SAMPLER_CHOICES

    p = argparse.ArgumentParser(prog="fsdiff", description="Score-based diffusion in function space.")
    sub = p.add_subparsers(dest="command", required=True)
    # flags every running command shares, and the data download flag of the commands that read MNIST
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    common.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    common.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    common.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (CUDA when available); default cpu")
    download = argparse.ArgumentParser(add_help=False)
    download.add_argument("--download", action="store_true",
                          help="download MNIST / Fashion-MNIST first if missing (into $FSDIFF_DATA_DIR or ~/.cache/fsdiff/data)")

    d = sub.add_parser("demo", parents=[common, download], help="noise at four resolutions, then train a small model and sample at 1x/2x/4x")
    d.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    d.add_argument("--data", default="synthetic", choices=["synthetic", "mnist", "fashion-mnist"],
                   help="built-in data set (mnist needs FSDIFF_DATA_DIR)")
    d.add_argument("--config", default=None, help="train from this TOML instead of the data set's example config")
    d.add_argument("--steps", type=int, default=None, help="training steps (longer runs give better samples)")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    d.add_argument("--n", type=int, default=64, help="samples per resolution")
    d.add_argument("--sampler", default="auto", choices=SAMPLER_CHOICES,
                   help="auto: ode_gauss for preconditioned models, else ode")
    d.add_argument("--sample-steps", type=int, default=24)
    d.add_argument("--n-pretrained", type=int, default=64, help="samples per resolution of the shipped MNIST model")
    d.add_argument("--no-pretrained", action="store_true", help="skip sampling the shipped MNIST model")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--n-noise", type=int, default=256, help="noise samples per resolution")
    d.add_argument("--noise-resolutions", type=int, nargs="+", default=[32, 64, 128, 256])
    d.add_argument("--noise-only", action="store_true", help="only the noise part (seconds)")
    d.set_defaults(func=_cmd_demo)

    t = sub.add_parser("train", parents=[common, download], help="train a score model from a TOML config")
    t.add_argument("config", help="TOML run file, e.g. configs/synthetic.toml")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set training.steps=200 (repeatable)")
    t.add_argument("--run-dir", default=None, help="run directory (default: runs/<name>)")
    t.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    t.add_argument("--force-config", action="store_true",
                   help="on --resume, accept config changes beyond steps / logging / checkpoint cadence")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("export", help="write a small pretrained-model file (EMA weights, config, statistics) from a run")
    e.add_argument("run", help="run directory or checkpoint file")
    e.add_argument("--out", required=True, help="output .pt file")
    e.add_argument("--force", action="store_true", help="overwrite an existing output file")
    e.set_defaults(func=_cmd_export)

    s = sub.add_parser("sample", parents=[common], help="sample a trained run at any resolution")
    s.add_argument("run", help="run directory or checkpoint file")
    s.add_argument("--resolution", nargs="+", default=None, metavar="N|NxM",
                   help="one or more grids (default: the training grid); finer than training is allowed")
    s.add_argument("--n", type=int, default=16, help="samples per resolution")
    s.add_argument("--sampler", default="auto", choices=SAMPLER_CHOICES,
                   help="auto (default): Heun on the probability-flow ODE, in Gaussian coordinates (ode_gauss) "
                        "for preconditioned models, else ode")
    s.add_argument("--steps", type=int, default=24, help="time steps (default 24: Heun, 48 score evaluations)")
    s.add_argument("--time-grid", default="edm", choices=["uniform", "quadratic", "edm"],
                   help="time grid (default: EDM's rho = 7 schedule)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--chunk-size", type=int, default=16, help="model evaluations per micro-batch")
    s.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="memory budget such as 4G: the chunk size is chosen per resolution to stay within it "
                        "(overrides --chunk-size; see docs/scaling.md)")
    s.add_argument("--out", default="samples.nc", help="netCDF path; several resolutions get _<N> suffixes")
    s.set_defaults(func=_cmd_sample)

    for name, helptext in (("superres", "super-resolve a coarse field: exact on its Fourier modes, at any finer grid"),
                           ("inpaint", "complete an image where a mask is False (guided by the observed pixels)")):
        c = sub.add_parser(name, parents=[common], help=helptext)
        c.add_argument("run", help="run directory or checkpoint file (e.g. pretrained/mnist.pt)")
        c.add_argument("--input", required=True, help="the observation: .nc (first variable) or grey-scale .png")
        if name == "inpaint":
            c.add_argument("--mask", required=True, help=".png or .nc of the input's shape: > 0.5 where observed")
            c.add_argument("--noise-std", type=float, default=0.05, help="observation noise std (default 0.05)")
        c.add_argument("--resolution", default=None, metavar="N|NxM",
                       help="target grid (default: the input's; superres needs one at least as fine)")
        c.add_argument("--n", type=int, default=16, help="samples")
        c.add_argument("--steps", type=int, default=100, help="reverse-SDE steps (default 100)")
        c.add_argument("--seed", type=int, default=0)
        c.add_argument("--chunk-size", type=int, default=16, help="model evaluations per micro-batch")
        c.add_argument("--out", default=f"{name}.nc", help="netCDF path; a PNG (input, samples, std) goes beside it")
        c.set_defaults(func=_cmd_superres if name == "superres" else _cmd_inpaint)

    f = sub.add_parser("sno-sample", parents=[common],
                       help="few-shot double digits: new images of the class of K support images (Score Neural Operator)")
    f.add_argument("run", help="few-shot checkpoint (resolution_studies/sno_mnist2.py writes few_shot.pt)")
    f.add_argument("--support", nargs="+", required=True, help="28 x 56 support images: .png files or .nc files")
    f.add_argument("--n", type=int, default=64, help="images to generate")
    f.add_argument("--steps", type=int, default=24, help="Heun PF-ODE steps (default 24)")
    f.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance weight w (1: none; default: the checkpoint's recommendation, "
                        "6 for pretrained/sno_double_digits.pt)")
    f.add_argument("--guidance-interval", type=float, nargs=2, default=None, metavar=("T_LO", "T_HI"),
                   help="guide only at diffusion times in [T_LO, T_HI] (default: the checkpoint's recommendation; "
                        "0 1 guides at every time)")
    f.add_argument("--augment", type=float, default=None, metavar="STRENGTH",
                   help="condition each image on its own randomly deformed copy of the supports (SupportAugmentation "
                        "strength; 0: off; default: the checkpoint's recommendation)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--out", default="sno_samples.nc", help="netCDF path; a PNG (support, generated) goes beside it")
    f.set_defaults(func=_cmd_sno_sample)

    v = sub.add_parser("invariance", parents=[common], help="evaluate a trained run at several resolutions against reference data")
    v.add_argument("run", help="run directory or checkpoint file")
    v.add_argument("--resolutions", type=int, nargs="+", default=[16, 32, 64, 128])
    v.add_argument("--n", type=int, default=64, help="generated samples per resolution")
    v.add_argument("--sampler", default="em", choices=SAMPLER_CHOICES)
    v.add_argument("--steps", type=int, default=100)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--out", default=None, help="output folder (default: RUN/invariance)")
    v.set_defaults(func=_cmd_invariance)
    return p


#: failures the command reports in a line or two (exit status 2); anything else is a bug: traceback
EXPECTED_ERRORS = (FsdiffError, ValueError, TypeError, KeyError, OSError, FloatingPointError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        tune_allocator()
        _set_threads(args)
        return int(args.func(args) or 0)
    except EXPECTED_ERRORS as e:
        if getattr(args, "debug", False):
            raise
        print(f"fsdiff {args.command}: error: {_describe(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fsdiff {args.command}: interrupted", file=sys.stderr)
        return 130


def _describe(e: BaseException) -> str:
    """One line for the user: the message, with the kind of failure where the message alone is unclear."""
    if isinstance(e, OSError) and not isinstance(e, FsdiffError):
        what = f"{e.filename}: " if e.filename else ""
        return f"{what}{e.strerror or e}"
    if isinstance(e, KeyError):
        return f"missing key {e}"
    return str(e)


if __name__ == "__main__":
    sys.exit(main())
