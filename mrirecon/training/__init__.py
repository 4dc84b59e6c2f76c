"""mrirecon.training."""
