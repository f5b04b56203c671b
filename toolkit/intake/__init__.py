"""What the user brings: checkpoints (safe by default), data, the built-in demo."""
