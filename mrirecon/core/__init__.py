"""Lightning-free building blocks: masks, the k-space chain, metrics, atomic writes, tables."""
