"""locate stage."""
