"""The pure core of Parley: state, events, actions, transitions, wire messages, codec.

Nothing is re-exported here: import from the modules (``parley.protocol.codec``, ...).
"""

__all__: list[str] = []
