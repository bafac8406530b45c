"""Infrastructure with no mathematics in it: crash-safe checkpoint files and the training lock, atomic writes,
RNG state and graceful stops, and the torchrun / DDP helpers."""
