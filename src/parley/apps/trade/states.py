"""The ledger's data: states, transactions, signatures, and the transaction id.

Rules:

* Every class here is ``@serializable`` under a stable ``parley.trade.*`` name, and checks its own
  fields in ``__post_init__``: the codec rebuilds a received dataclass by calling its constructor
  without checking field types, so this is where a peer's malformed state is refused (the flow
  that receives it fails with a ``DeserializationError``).
* A transaction's id is the SHA-256 of its *canonical* CBOR encoding (RFC 8949 deterministic
  encoding, written with ``cbor2`` here from plain values: Decimals as their text, datetimes as
  ISO 8601 text). Parley's codec is not used for the id: it is not canonical and not public. The
  same canonical bytes are what the vault stores, and :func:`transaction_from_bytes` reads back.
* A signature is a node's Ed25519 signature (``services.identity``) of the id's 32 bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from functools import cached_property
from typing import Any

import cbor2

from parley import serializable

#: The version written first in a transaction's canonical encoding.
ENCODING_VERSION = 1


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, not {value!r}")
    return value


def _amount(value: object, what: str) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite() or value <= 0:
        raise ValueError(f"{what} must be a positive, finite Decimal, not {value!r}")
    return value


def _moment(value: object, what: str) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, not {value!r}")
    return value


def _tuple_of(value: object, kinds: type | tuple[type, ...], what: str) -> None:
    if not isinstance(value, tuple) or not all(isinstance(v, kinds) for v in value):
        raise ValueError(f"{what} must be a tuple of {kinds}, not {value!r}")


@serializable(name="parley.trade.StateRef")
@dataclass(frozen=True)
class StateRef:
    """A pointer to an output: the id of the transaction that created it, and its index."""

    txhash: str
    index: int

    def __post_init__(self) -> None:
        if not isinstance(self.txhash, str) or len(self.txhash) != 64:
            raise ValueError(f"a StateRef's txhash is 64 hex digits, not {self.txhash!r}")
        bytes.fromhex(self.txhash)
        if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
            raise ValueError(f"a StateRef's index is an int >= 0, not {self.index!r}")

    def __str__(self) -> str:
        return f"{self.txhash}:{self.index}"

    @classmethod
    def parse(cls, text: str) -> StateRef:
        """The ref written as ``"<txhash>:<index>"`` (as ``str(ref)`` writes it)."""
        txhash, _, index = text.partition(":")
        return cls(txhash, int(index))


@serializable(name="parley.trade.Cash")
@dataclass(frozen=True)
class Cash:
    """An amount of money that ``issuer`` owes to whoever is ``owner``."""

    amount: Decimal
    currency: str
    owner: str
    issuer: str

    def __post_init__(self) -> None:
        _amount(self.amount, "an amount of cash")
        for name in ("currency", "owner", "issuer"):
            _text(getattr(self, name), f"cash's {name}")


@serializable(name="parley.trade.CommercialPaper")
@dataclass(frozen=True)
class CommercialPaper:
    """``issuer``'s promise to pay ``face_value`` to the ``owner`` at ``maturity``."""

    face_value: Decimal
    currency: str
    maturity: datetime
    owner: str
    issuer: str

    def __post_init__(self) -> None:
        _amount(self.face_value, "a paper's face value")
        _moment(self.maturity, "a paper's maturity")
        for name in ("currency", "owner", "issuer"):
            _text(getattr(self, name), f"a paper's {name}")


State = Cash | CommercialPaper


def kind_of(state: State) -> str:
    """``"Cash"`` or ``"CommercialPaper"``: the name bids and the vault use for a state's type."""
    return type(state).__name__


def with_owner(state: State, owner: str) -> State:
    """The same state, owned by ``owner``."""
    return replace(state, owner=owner)


@serializable(name="parley.trade.StateAndRef")
@dataclass(frozen=True)
class StateAndRef:
    """A state together with where it was created."""

    state: State
    ref: StateRef

    def __post_init__(self) -> None:
        if not isinstance(self.state, Cash | CommercialPaper):
            raise ValueError(f"not a state: {self.state!r}")
        if not isinstance(self.ref, StateRef):
            raise ValueError(f"not a StateRef: {self.ref!r}")


#: The commands a transaction may carry, by the kind of state they govern.
COMMANDS: dict[str, type[State]] = {
    "cash.issue": Cash,
    "cash.move": Cash,
    "paper.issue": CommercialPaper,
    "paper.move": CommercialPaper,
}
#: The command that moves each kind of state (:func:`kind_of`) to another owner.
MOVE_COMMANDS = {"Cash": "cash.move", "CommercialPaper": "paper.move"}


@serializable(name="parley.trade.Command")
@dataclass(frozen=True)
class Command:
    """What a transaction does to one kind of state, and who must sign for it."""

    name: str
    signers: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.name not in COMMANDS:
            raise ValueError(f"unknown command {self.name!r}")
        _tuple_of(self.signers, str, "a command's signers")
        if not self.signers:
            raise ValueError(f"{self.name} names no signer")


@serializable(name="parley.trade.TimeWindow")
@dataclass(frozen=True)
class TimeWindow:
    """When the notary may sign the transaction: from ``from_time`` (incl.) to ``until_time``."""

    from_time: datetime | None
    until_time: datetime | None

    def __post_init__(self) -> None:
        for moment in (self.from_time, self.until_time):
            if moment is not None:
                _moment(moment, "a time window's bound")

    def contains(self, moment: datetime) -> bool:
        after = self.from_time is None or self.from_time <= moment
        return after and (self.until_time is None or moment < self.until_time)


@serializable(name="parley.trade.Transaction")
@dataclass(frozen=True)
class Transaction:
    """A proposed change to the ledger: consume ``inputs``, create ``outputs``.

    ``salt`` (a random UUID) keeps two otherwise equal transactions (two issues of the same amount)
    apart: they would have the same id, and so the same output refs.
    """

    inputs: tuple[StateRef, ...]
    outputs: tuple[State, ...]
    commands: tuple[Command, ...]
    notary: str
    time_window: TimeWindow | None
    salt: str

    def __post_init__(self) -> None:
        _tuple_of(self.inputs, StateRef, "a transaction's inputs")
        _tuple_of(self.outputs, (Cash, CommercialPaper), "a transaction's outputs")
        _tuple_of(self.commands, Command, "a transaction's commands")
        _text(self.notary, "a transaction's notary")
        _text(self.salt, "a transaction's salt")
        if self.time_window is not None and not isinstance(self.time_window, TimeWindow):
            raise ValueError(f"not a TimeWindow: {self.time_window!r}")

    @cached_property
    def canonical(self) -> bytes:
        """The canonical CBOR encoding: what the id hashes and the vault stores."""
        return cbor2.dumps(_plain(self), canonical=True)

    @property
    def id(self) -> str:
        """The SHA-256 of :attr:`canonical`, in hex."""
        return hashlib.sha256(self.canonical).hexdigest()

    def out_ref(self, index: int) -> StateRef:
        return StateRef(self.id, index)

    def out_refs(self) -> list[StateAndRef]:
        """Every output with its ref."""
        return [StateAndRef(state, self.out_ref(i)) for i, state in enumerate(self.outputs)]


@serializable(name="parley.trade.TransactionSignature")
@dataclass(frozen=True)
class TransactionSignature:
    """``by``'s Ed25519 signature of a transaction id's 32 bytes."""

    by: str
    signature: bytes

    def __post_init__(self) -> None:
        _text(self.by, "a signer")
        if not isinstance(self.signature, bytes) or len(self.signature) != 64:
            raise ValueError("an Ed25519 signature is 64 bytes")


@serializable(name="parley.trade.SignedTransaction")
@dataclass(frozen=True)
class SignedTransaction:
    """A transaction and the signatures collected on it so far."""

    tx: Transaction
    signatures: tuple[TransactionSignature, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.tx, Transaction):
            raise ValueError(f"not a Transaction: {self.tx!r}")
        _tuple_of(self.signatures, TransactionSignature, "a transaction's signatures")

    @property
    def id(self) -> str:
        return self.tx.id

    @property
    def signers(self) -> set[str]:
        return {s.by for s in self.signatures}

    def with_signature(self, signature: TransactionSignature) -> SignedTransaction:
        """This transaction with ``signature`` added (replacing one by the same node)."""
        kept = tuple(s for s in self.signatures if s.by != signature.by)
        return SignedTransaction(self.tx, (*kept, signature))


def signed_bytes(tx_id: str) -> bytes:
    """What a signature of transaction ``tx_id`` signs."""
    return bytes.fromhex(tx_id)


# ---- canonical encoding -------------------------------------------------------------------


def _plain_state(state: State) -> list[Any]:
    if isinstance(state, Cash):
        return ["cash", str(state.amount), state.currency, state.owner, state.issuer]
    maturity = state.maturity.isoformat()
    return ["paper", str(state.face_value), state.currency, maturity, state.owner, state.issuer]


def _plain(tx: Transaction) -> list[Any]:
    window = tx.time_window
    return [
        ENCODING_VERSION,
        [[ref.txhash, ref.index] for ref in tx.inputs],
        [_plain_state(state) for state in tx.outputs],
        [[command.name, list(command.signers)] for command in tx.commands],
        tx.notary,
        None if window is None else [_iso(window.from_time), _iso(window.until_time)],
        tx.salt,
    ]


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _moment_of(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _state_of(plain: list[Any]) -> State:
    if plain[0] == "cash":
        return Cash(Decimal(plain[1]), plain[2], plain[3], plain[4])
    if plain[0] == "paper":
        maturity = datetime.fromisoformat(plain[3])
        return CommercialPaper(Decimal(plain[1]), plain[2], maturity, plain[4], plain[5])
    raise ValueError(f"unknown state kind {plain[0]!r}")


def transaction_from_bytes(data: bytes) -> Transaction:
    """The transaction whose canonical encoding is ``data`` (as the vault stores it).

    Raises:
        ValueError: ``data`` is not a transaction's canonical encoding.
    """
    plain = cbor2.loads(data)
    if not isinstance(plain, list) or len(plain) != 7 or plain[0] != ENCODING_VERSION:
        raise ValueError("not a canonical transaction of this version")
    _, inputs, outputs, commands, notary, window, salt = plain
    tx = Transaction(
        tuple(StateRef(txhash, index) for txhash, index in inputs),
        tuple(_state_of(state) for state in outputs),
        tuple(Command(name, tuple(signers)) for name, signers in commands),
        notary,
        None if window is None else TimeWindow(_moment_of(window[0]), _moment_of(window[1])),
        salt,
    )
    if tx.canonical != data:
        raise ValueError("the bytes are not in canonical form")
    return tx


__all__ = [
    "COMMANDS",
    "MOVE_COMMANDS",
    "Cash",
    "Command",
    "CommercialPaper",
    "SignedTransaction",
    "State",
    "StateAndRef",
    "StateRef",
    "TimeWindow",
    "Transaction",
    "TransactionSignature",
    "kind_of",
    "signed_bytes",
    "transaction_from_bytes",
    "with_owner",
]
