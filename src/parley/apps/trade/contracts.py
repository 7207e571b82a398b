"""What makes a transaction valid: the contracts, the signatures, and a resolved history.

Every rule here is a pure function of the transaction and the states it consumes, so every node
that checks a transaction reaches the same verdict. A failure raises
:class:`TransactionVerificationException`, a ``FlowException``: the counterparty that sent the
transaction learns why it was refused.

* **Cash** is grouped by (currency, issuer). ``cash.issue`` creates cash out of nothing, only with
  no cash inputs, and only signed by the issuer of every output; ``cash.move`` keeps every group's
  total exactly and is signed by the owner of every cash input.
* **Commercial paper**: ``paper.issue`` is signed by the issuer and consumes no paper;
  ``paper.move`` changes only the owner of each paper (inputs and outputs in the same order) and
  is signed by the owner of every paper input.
* Every state in a transaction is governed by a command of its kind; an input is consumed once.
* **Signatures**: every signer a command names, and the notary if the transaction has inputs or a
  time window, signs the id; :func:`check_signatures` checks them against the network map.
* **History**: a transaction's inputs are outputs of transactions that are themselves valid, all
  the way back to the issues (:func:`verify_chain`). A state moves only under the notary of the
  transaction that created it (no notary change).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal

from parley import FlowException
from parley.apps.trade.states import (
    COMMANDS,
    Cash,
    CommercialPaper,
    SignedTransaction,
    State,
    StateRef,
    Transaction,
    signed_bytes,
    with_owner,
)

#: ``verify(node, data, signature)``: ``services.identity.verify``.
Verifier = Callable[[str, bytes, bytes], bool]


class TransactionVerificationException(FlowException):
    """A transaction breaks a contract, lacks a signature, or has a signature that does not
    verify."""

    tx_id: str

    def __init__(self, message: str, tx_id: str) -> None:
        super().__init__(message)
        self.tx_id = tx_id


def _refuse(tx: Transaction, message: str) -> TransactionVerificationException:
    return TransactionVerificationException(f"transaction {tx.id[:12]}: {message}", tx.id)


def needs_notary(tx: Transaction) -> bool:
    """Whether the notary must sign: it consumes states, or it is bounded in time."""
    return bool(tx.inputs) or tx.time_window is not None


def required_signers(tx: Transaction) -> set[str]:
    """Every node whose signature the transaction needs, the notary included if it must sign."""
    signers = {s for command in tx.commands for s in command.signers}
    if needs_notary(tx):
        signers.add(tx.notary)
    return signers


def verify_contracts(tx: Transaction, inputs: Sequence[State]) -> None:
    """Check ``tx`` against the contracts, given the states its inputs refer to (in order).

    Raises:
        TransactionVerificationException: the first rule it breaks.
    """
    if len(inputs) != len(tx.inputs):
        raise _refuse(tx, "not every input is resolved")
    if len(set(tx.inputs)) != len(tx.inputs):
        raise _refuse(tx, "an input appears twice")
    names = [command.name for command in tx.commands]
    if len(set(names)) != len(names):
        raise _refuse(tx, "a command appears twice")
    commands = {command.name: set(command.signers) for command in tx.commands}
    for kind in (Cash, CommercialPaper):
        used = any(isinstance(s, kind) for s in (*inputs, *tx.outputs))
        governed = any(COMMANDS[name] is kind for name in commands)
        if used and not governed:
            raise _refuse(tx, f"{kind.__name__} states with no {kind.__name__} command")
        if governed and not used:
            raise _refuse(tx, f"a {kind.__name__} command with no {kind.__name__} state")
    cash_in = [s for s in inputs if isinstance(s, Cash)]
    cash_out = [s for s in tx.outputs if isinstance(s, Cash)]
    paper_in = [s for s in inputs if isinstance(s, CommercialPaper)]
    paper_out = [s for s in tx.outputs if isinstance(s, CommercialPaper)]
    if cash_in or cash_out:
        _verify_cash(tx, commands, cash_in, cash_out)
    if paper_in or paper_out:
        _verify_paper(tx, commands, paper_in, paper_out)


def _verify_cash(
    tx: Transaction, commands: Mapping[str, set[str]], ins: list[Cash], outs: list[Cash]
) -> None:
    if "cash.issue" in commands and "cash.move" in commands:
        raise _refuse(tx, "cash is issued and moved in one transaction")
    if "cash.issue" in commands:
        if ins:
            raise _refuse(tx, "an issue of cash consumes cash")
        unsigned = {c.issuer for c in outs} - commands["cash.issue"]
        if unsigned:
            raise _refuse(tx, f"cash issued without its issuer's signature: {sorted(unsigned)}")
        return
    totals: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for cash in ins:
        totals[cash.currency, cash.issuer] += cash.amount
    for cash in outs:
        totals[cash.currency, cash.issuer] -= cash.amount
    unbalanced = sorted(f"{c} of {i}" for (c, i), total in totals.items() if total != 0)
    if unbalanced:
        raise _refuse(tx, f"cash in and out differ for {', '.join(unbalanced)}")
    unsigned = {c.owner for c in ins} - commands["cash.move"]
    if unsigned:
        raise _refuse(tx, f"cash moved without its owner's signature: {sorted(unsigned)}")


def _verify_paper(
    tx: Transaction,
    commands: Mapping[str, set[str]],
    ins: list[CommercialPaper],
    outs: list[CommercialPaper],
) -> None:
    if "paper.issue" in commands and "paper.move" in commands:
        raise _refuse(tx, "paper is issued and moved in one transaction")
    if "paper.issue" in commands:
        if ins:
            raise _refuse(tx, "an issue of paper consumes paper")
        unsigned = {p.issuer for p in outs} - commands["paper.issue"]
        if unsigned:
            raise _refuse(tx, f"paper issued without its issuer's signature: {sorted(unsigned)}")
        return
    if len(ins) != len(outs):
        raise _refuse(tx, "a move of paper must create one paper for each it consumes")
    for before, after in zip(ins, outs, strict=True):
        if with_owner(before, after.owner) != after:
            raise _refuse(tx, "a move of paper may change only its owner")
    unsigned = {p.owner for p in ins} - commands["paper.move"]
    if unsigned:
        raise _refuse(tx, f"paper moved without its owner's signature: {sorted(unsigned)}")


def check_signatures(
    stx: SignedTransaction, verify: Verifier, *, allowed_missing: Iterable[str] = ()
) -> None:
    """Check that every signature verifies and that only ``allowed_missing`` ones are missing.

    Raises:
        TransactionVerificationException: a signature does not verify (the transaction was
            changed after it was signed, or it is not the signer's), a signer was not asked for,
            or a required signature is missing.
    """
    tx, required = stx.tx, required_signers(stx.tx)
    data = signed_bytes(tx.id)
    for signature in stx.signatures:
        if signature.by not in required:
            raise _refuse(tx, f"signed by {signature.by}, who is not a required signer")
        if not verify(signature.by, data, signature.signature):
            raise _refuse(tx, f"the signature of {signature.by} does not verify")
    missing = required - stx.signers - set(allowed_missing)
    if missing:
        raise _refuse(tx, f"missing signatures of {sorted(missing)}")


def verify_chain(
    stx: SignedTransaction,
    history: Iterable[SignedTransaction],
    verify: Verifier,
    *,
    allowed_missing: Iterable[str] = (),
) -> dict[str, SignedTransaction]:
    """Verify ``stx`` and, first, every transaction its inputs come from, back to the issues.

    Args:
        stx: the transaction to verify (it may lack the signatures in ``allowed_missing``).
        history: transactions that include every ancestor of ``stx`` (more are ignored).
        verify: ``services.identity.verify``.
        allowed_missing: signatures ``stx`` may still lack.

    Returns:
        The ancestors that were needed and verified, by id (``stx`` not included).

    Raises:
        TransactionVerificationException: an ancestor is missing or invalid, or ``stx`` is.
    """
    known = {ancestor.id: ancestor for ancestor in history}
    verified: dict[str, SignedTransaction] = {}
    # Depth-first, iteratively: an ancestor is verified after all of its own ancestors.
    stack: list[tuple[SignedTransaction, bool]] = [(stx, False)]
    while stack:
        current, expanded = stack.pop()
        if current.id in verified:
            continue
        if not expanded:
            stack.append((current, True))
            for ref in current.tx.inputs:
                parent = known.get(ref.txhash)
                if parent is None:
                    raise _refuse(current.tx, f"the history lacks transaction {ref.txhash[:12]}")
                if parent.id not in verified:
                    stack.append((parent, False))
            continue
        inputs = [_output(verified[ref.txhash].tx, ref, current.tx) for ref in current.tx.inputs]
        verify_contracts(current.tx, inputs)
        missing = allowed_missing if current is stx else ()
        check_signatures(current, verify, allowed_missing=missing)
        verified[current.id] = current
    del verified[stx.id]
    return verified


def _output(parent: Transaction, ref: StateRef, child: Transaction) -> State:
    if ref.index >= len(parent.outputs):
        raise _refuse(child, f"input {ref} does not exist")
    if parent.notary != child.notary:
        raise _refuse(child, f"input {ref} is notarised by {parent.notary}, not {child.notary}")
    return parent.outputs[ref.index]


__all__ = [
    "TransactionVerificationException",
    "Verifier",
    "check_signatures",
    "needs_notary",
    "required_signers",
    "verify_chain",
    "verify_contracts",
]
