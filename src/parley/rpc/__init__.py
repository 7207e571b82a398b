"""Operate a node from other processes: its RPC service over NATS, users, and the clients.

* :class:`RpcClient` (blocking) and :class:`AsyncRpcClient` drive a node's service;
* :class:`RpcUser` and :func:`hash_password` configure who may use it;
* ``docs/rpc.md`` documents the subjects and messages, for clients in any language.
"""

from parley.rpc.client import AsyncFlowHandle, AsyncRpcClient
from parley.rpc.errors import (
    BadArgument,
    BadRequest,
    ClientIdConflict,
    FlowNotFound,
    InternalError,
    NodeUnavailable,
    NodeUnreachable,
    NotAuthenticated,
    NotStartable,
    PermissionRefused,
    Refused,
    RemoteFlowError,
    RpcError,
    RpcTimeout,
    UnknownFlowClass,
)
from parley.rpc.models import FlowOutcome, FlowRow, ProgressRow, ProgressUpdate
from parley.rpc.sync import RpcClient, RpcFlowHandle
from parley.rpc.users import RpcUser, hash_password

__all__ = [
    "AsyncFlowHandle",
    "AsyncRpcClient",
    "BadArgument",
    "BadRequest",
    "ClientIdConflict",
    "FlowNotFound",
    "FlowOutcome",
    "FlowRow",
    "InternalError",
    "NodeUnavailable",
    "NodeUnreachable",
    "NotAuthenticated",
    "NotStartable",
    "PermissionRefused",
    "ProgressRow",
    "ProgressUpdate",
    "Refused",
    "RemoteFlowError",
    "RpcClient",
    "RpcError",
    "RpcFlowHandle",
    "RpcTimeout",
    "RpcUser",
    "UnknownFlowClass",
    "hash_password",
]
