"""The toy world: procedurally drawn scenes that exercise the whole Lyrics pipeline on a CPU."""
