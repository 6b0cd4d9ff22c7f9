"""Helpers shared by tests (no fixtures: those live in conftest.py files)."""
