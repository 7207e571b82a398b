"""Fault scenarios on real SQLite files: failed commits, publishes and acks, and the hospital."""
