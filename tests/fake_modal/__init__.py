"""Tests of the fake Modal control plane (``scripts/fake_modal``) and the functions tests register on it."""
