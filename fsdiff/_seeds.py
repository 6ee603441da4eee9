"""Named offsets of the random streams derived from one seed: the one place they are defined.

A run, study or evaluation takes one integer seed; each independent random source it needs is a
``torch.Generator`` seeded with ``seed + OFFSET``, so the sources never share a stream and a
reader can tell which draw is which.
"""

from __future__ import annotations

import torch

__all__ = ["REFERENCE", "PROJECTIONS", "NOISE", "STATISTICS", "SPLIT", "TRAINING_STRIDE", "TRAINING_STREAMS", "MAX_SHARDS",
           "derived"]

#: reference ("true") data drawn next to generated samples (evaluations, demos)
REFERENCE = 1
#: random directions of sliced metrics
PROJECTIONS = 2
#: times and noise of a fixed validation set (its data use the seed itself)
NOISE = 1
#: draws that estimate per-mode data statistics for the preconditioner
STATISTICS = 7
#: the train / test split of a family of distributions
SPLIT = 1
#: training generators: ``seed * TRAINING_STRIDE + index`` for the streams below, in this order
TRAINING_STRIDE = 1000
TRAINING_STREAMS = ("level", "data", "noise")
#: data shards of a data-parallel run: shard j's data and noise streams are
#: ``seed * TRAINING_STRIDE + 3 j + 1, + 2`` (shard 0: the single-process streams)
MAX_SHARDS = (TRAINING_STRIDE - 1) // len(TRAINING_STREAMS)


def derived(seed: int, offset: int) -> torch.Generator:
    """A CPU generator seeded with ``seed + offset``."""
    return torch.Generator().manual_seed(int(seed) + int(offset))
