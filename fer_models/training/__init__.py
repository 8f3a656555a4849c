"""The one train/eval engine (engine.py), one client's local round (local_round.py, its dp=sample plan in
private_plan.py), batch augmentation, optimizer state and schedules, metrics."""
