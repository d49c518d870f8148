"""The foundation model (the teacher): blocks, model, training loop, checkpoints."""
