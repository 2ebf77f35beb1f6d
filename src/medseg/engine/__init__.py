"""Training: the loop (train.py), runtime choices (runtime.py), checkpoints and run-folder files."""
