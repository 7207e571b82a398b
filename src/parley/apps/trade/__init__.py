"""The two-party trade: a small ledger app, written against Parley's public API.

Run it on a node with ``--app parley.apps.trade`` (``apps=["parley.apps.trade"]`` on a
MockNetwork). ``docs/tutorial.md`` walks through it.

**States and transactions** (:mod:`~parley.apps.trade.states`). ``Cash`` and
``CommercialPaper`` are ``@serializable`` dataclasses with an owner and an issuer. A
``Transaction`` consumes inputs (``StateRef``: a transaction id and an output index), creates
outputs, carries commands (what it does, and who must sign) and names its notary and an optional
time window. Its id is the SHA-256 of its canonical CBOR encoding. A ``SignedTransaction`` is the
transaction with the nodes' Ed25519 signatures of its id, made and checked with
``services.identity`` (the keys the network map admits).

**Contracts** (:mod:`~parley.apps.trade.contracts`): cash is conserved per currency and issuer
and moves only with its owners' signatures; paper changes only its owner; a transaction is
valid only with a valid history back to the issues.

**The vault** (:mod:`~parley.apps.trade.vault`, :mod:`~parley.apps.trade.schema`): each node's
own tables (``vault_transactions``, ``vault_states``, ``vault_consumed``, ``notary_commits``,
``trade_bids``), defined and migrated with sqlite-utils, whose generated SQL is this module's
``MIGRATIONS``. Flows write them only through ``services.db`` — so a vault write commits in the
same SQLite transaction as the flow's checkpoint — with sqlite-utils' table API: each
``insert``/``upsert``/``delete_where``/``rows_where`` is dry-run against a schema-only in-memory
copy of the tables, and the statement sqlite-utils executed there is what the flow queues (or
queries). sqlite-utils is never on the checkpoint path (``bench/trade.py``).

**Flows**: ``IssueCash``, ``IssuePaper`` and ``PlaceBid`` (the buyer's standing instruction); the
trade, ``Seller`` and ``Buyer`` (:mod:`~parley.apps.trade.twoparty`); ``CollectSignatures`` and
``SignTransaction`` (:mod:`~parley.apps.trade.signing`); ``Finality`` and ``ReceiveFinality``
(:mod:`~parley.apps.trade.finality`); ``Notarise`` and the notary's ``NotaryResponder``, which
refuses an input consumed twice with ``NotaryException`` (:mod:`~parley.apps.trade.notary`);
``SpendAgain``, the double spend ``parley demo`` shows the notary refusing
(:mod:`~parley.apps.trade.demo`).
"""

from parley.apps.trade.contracts import TransactionVerificationException
from parley.apps.trade.demo import SpendAgain
from parley.apps.trade.finality import Finality, ReceiveFinality
from parley.apps.trade.issue import IssueCash, IssuePaper, PlaceBid
from parley.apps.trade.notary import Notarise, NotaryException, NotaryResponder
from parley.apps.trade.schema import MIGRATIONS
from parley.apps.trade.signing import CollectSignatures, SignTransaction
from parley.apps.trade.states import (
    Cash,
    Command,
    CommercialPaper,
    SignedTransaction,
    StateAndRef,
    StateRef,
    TimeWindow,
    Transaction,
    TransactionSignature,
)
from parley.apps.trade.twoparty import (
    AssetMismatchException,
    Buyer,
    InsufficientBalanceException,
    Seller,
    SellerTradeInfo,
    SignPayment,
    UnacceptablePriceException,
)
from parley.apps.trade.vault import Vault, VaultTable

__all__ = [
    "MIGRATIONS",
    "AssetMismatchException",
    "Buyer",
    "Cash",
    "CollectSignatures",
    "Command",
    "CommercialPaper",
    "Finality",
    "InsufficientBalanceException",
    "IssueCash",
    "IssuePaper",
    "Notarise",
    "NotaryException",
    "NotaryResponder",
    "PlaceBid",
    "ReceiveFinality",
    "Seller",
    "SellerTradeInfo",
    "SignPayment",
    "SignTransaction",
    "SignedTransaction",
    "SpendAgain",
    "StateAndRef",
    "StateRef",
    "TimeWindow",
    "Transaction",
    "TransactionSignature",
    "TransactionVerificationException",
    "UnacceptablePriceException",
    "Vault",
    "VaultTable",
]
