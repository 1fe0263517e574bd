"""A local stand-in for the Hugging Face Hub that the real huggingface_hub client talks to (see server.py)."""
