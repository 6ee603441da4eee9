"""Random draws of a sampling run: one seed per draw from the caller's generator (see :mod:`fsdiff.sampling`)."""

from __future__ import annotations

import torch

__all__ = ["SEED_HIGH", "draw_seeds", "seeded"]

#: seeds are drawn uniformly in ``[0, SEED_HIGH)``
SEED_HIGH = 2**62


def draw_seeds(generator: torch.Generator | None, count: int) -> list[int]:
    if count == 0:
        return []
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randint(0, SEED_HIGH, (count,), generator=generator, dtype=torch.int64, device=device).tolist()


def seeded(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))
