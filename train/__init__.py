"""Training: datasets, data preparation, losses, image pool, schedules, trainer, DDP, sweeps."""
