"""mrirecon.data."""
