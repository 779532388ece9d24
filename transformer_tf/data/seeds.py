"""The per-epoch seeds of every input pipeline (translation in memory or streamed, classification)."""

from __future__ import annotations

import numpy as np


def epoch_seeds(seed: int, epoch: int) -> tuple[int, int]:
    """The (example shuffle, batch shuffle) seeds of epoch ``epoch`` of a run seeded ``seed``:
    well-mixed 32-bit seeds, so that neighbouring epochs (and seeds) get unrelated orders."""
    example_seed, batch_seed = (
        int(s) for s in np.random.SeedSequence([seed, epoch]).generate_state(2)
    )
    return example_seed, batch_seed
