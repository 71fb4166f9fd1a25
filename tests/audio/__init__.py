"""Audio data tool tests (issue 3)."""
