"""The agent console: review, corrections, ratings, flags and human takeover."""
