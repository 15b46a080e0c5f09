"""Training data: import, cleaning, versioned snapshots (see README, "Training")."""
