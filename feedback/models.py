"""Agent feedback on conversations (filled in by the agent-console work)."""
