"""The corpus: merge converted datasets into leak-free face-text pairs, and tokenize the faces."""
