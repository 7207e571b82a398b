"""Sample apps shipped with Parley, written against the public API: ping-pong (tests, docs,
benchmarks).
"""

__all__: list[str] = []
