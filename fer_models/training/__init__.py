"""The one train/eval engine (engine.py), batch augmentation, optimizer state and schedules, metrics."""
