"""Foundations every other core package may import: the emotion labels and image size (labels.py), the one atomic writer (atomic.py)."""
