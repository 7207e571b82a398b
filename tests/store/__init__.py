"""Tests of parley.store, on real SQLite files."""
