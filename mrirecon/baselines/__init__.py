"""mrirecon.baselines."""
