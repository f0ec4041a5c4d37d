"""One run: the training loop, evaluation metrics, checkpoints and resume."""
