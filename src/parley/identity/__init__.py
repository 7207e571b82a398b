"""Identities and trust: node keys, the operator's key, the signed network map."""

from parley.identity.keys import IdentityError, KeyPair, load_identity, verify

__all__ = ["IdentityError", "KeyPair", "load_identity", "verify"]
