"""The pure core of Parley: state, events, actions, transitions, wire messages, codec."""
