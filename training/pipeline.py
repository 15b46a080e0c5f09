"""Adapter between retraining runs and the data/train/evaluate modules (filled at merge)."""
