"""The training engine: strategy, loop, checkpoints, losses, metrics and schedules."""
