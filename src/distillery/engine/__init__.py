"""Training engine: seeding and devices, schedules, atomic checkpoints, the training loop, embedding."""
