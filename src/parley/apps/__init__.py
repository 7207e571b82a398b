"""Sample apps shipped with Parley, written against the public API (they import only ``parley``):

* ``parley.apps.pingpong``: ping-pong, the smallest useful pair of flows (tests, docs,
  benchmarks);
* ``parley.apps.trade``: the two-party trade, a small ledger app (cash, commercial paper,
  signed transactions, a vault in the app's own tables, a notary), walked through in
  ``docs/tutorial.md``.
"""

__all__: list[str] = []
