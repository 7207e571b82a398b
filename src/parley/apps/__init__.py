"""Sample apps shipped with Parley: ping-pong (tests, docs, benchmarks) and a two-party trade."""
