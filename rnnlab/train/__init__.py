"""Training: the loop (plain functions), device and seeding helpers, checkpoints."""
