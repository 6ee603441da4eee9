"""Cost of the hybrid Score Neural Operator's closed-form base: one conditional DSM step, hybrid against plain.

The study's settings (``configs/sno_gmm.toml``): 16 mixtures x 128 points per step, h = 0.1 on a 32²
encoding grid, the base's series on the 4x zero-padded 128² box, FiLM 3 x 256 decoder. Each step is
forward + backward + Adam; the two models are timed round-robin in the same process (medians).

Run: ``.venv/bin/python benchmarks/bench_sno_hybrid.py [--quick]``; writes ``benchmarks/results/sno_hybrid.txt``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, interleaved, median, set_malloc  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    set_malloc()
    torch.set_num_threads(1)
    import fsdiff as fd
    from fsdiff.sno import GMMFamily, KernelMeanEmbedding, ScoreNeuralOperator, sno_dsm_loss

    fam = GMMFamily()
    origin, L = fam.box()
    kme = KernelMeanEmbedding(fd.Grid((32, 32), L), origin, 0.1)
    sde = fd.VPSDE(None, 0.1, 20.0)
    mix = fam.mixtures(fam.train_combinations[:16])
    u = kme.exact_gmm(mix)
    arch = dict(width=16, modes=(8, 8), n_layers=2, code_dim=32, hidden=256, decoder_layers=3, conditioning="film")
    steps = {}
    for name, base in (("plain", None), ("hybrid", {"t_fade": [0.3, 0.45], "pad": 4})):
        torch.manual_seed(0)
        model = ScoreNeuralOperator(base=base, **arch)
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        g = torch.Generator().manual_seed(1)

        def step(model=model, opt=opt, g=g):
            x0 = mix.sample(128, g)
            b = model.make_base(u, kme) if model.base is not None else None
            loss = sno_dsm_loss(model, x0, sde, model.encode(u, kme.grid), generator=g, t_density="log_mix", base=b).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        steps[name] = step
    times = interleaved(steps, repeats=5 if a.quick else 21, warmup=2)
    header("hybrid SNO training step against the plain SNO (16 mixtures x 128 points, 1 thread)")
    lines = [f"{k:>7}: median {median(v) * 1e3:7.1f} ms per step" for k, v in times.items()]
    lines.append(f"  ratio hybrid / plain: {median(times['hybrid']) / median(times['plain']):.2f}")
    print("\n".join(lines))
    if not a.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "sno_hybrid.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
