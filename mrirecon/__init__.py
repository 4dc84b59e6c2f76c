"""mrirecon."""
