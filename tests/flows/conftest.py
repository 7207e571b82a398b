"""Fixtures for the flow tests: a MockNetwork and its nodes."""

from __future__ import annotations

import pytest

from parley.testing import MockNetwork, MockNode


@pytest.fixture
def net() -> MockNetwork:
    return MockNetwork()


@pytest.fixture
def alice(net: MockNetwork) -> MockNode:
    return net.create_node("alice")


@pytest.fixture
def bob(net: MockNetwork) -> MockNode:
    return net.create_node("bob")


@pytest.fixture
def charlie(net: MockNetwork) -> MockNode:
    return net.create_node("charlie")
