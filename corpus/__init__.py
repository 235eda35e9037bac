"""The corpus stage: merge converted datasets into leak-free face-text pairs with statistics against the paper."""
