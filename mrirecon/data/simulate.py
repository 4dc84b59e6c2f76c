"""``mrirecon data simulate``'s entry point: see :mod:`mrirecon.data.simulation`, which this
module re-exports (``simulate_dataset``, the presets) under the name scripts and tests use."""

from mrirecon.data.simulation import (  # noqa: F401
    CHALLENGES,
    CONTRASTS,
    PRESETS,
    SPLITS,
    SUMMARY_FILE,
    Preset,
    Randomization,
    simulate_dataset,
)

__all__ = ["CHALLENGES", "CONTRASTS", "PRESETS", "SPLITS", "SUMMARY_FILE", "Preset", "Randomization", "simulate_dataset"]
