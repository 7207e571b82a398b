"""The node's actors (pykka) and the flow driver they host."""
