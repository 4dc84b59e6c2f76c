"""mrirecon.evaluation."""
