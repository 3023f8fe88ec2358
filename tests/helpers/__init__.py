"""Shared test helpers: test modules import these, never each other."""
