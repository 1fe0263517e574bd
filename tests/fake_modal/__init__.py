"""A fake Modal control plane for testing the real modal client offline (see server.py)."""
