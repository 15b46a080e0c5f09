"""Training data, fine-tuning, evaluation and the model-version registry."""
