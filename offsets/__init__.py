"""offsets stage."""
