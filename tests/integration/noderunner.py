"""Run a node in its own process, start one flow (with a client id), print its outcome as JSON.

    python -m tests.integration.noderunner --name alice --nats URL --data-dir DIR \
        --flow tests.integration.apps:Rounds --args '["bob", 3]' --client-id c1

Run it again with the same client id after the process died: the node restores the flow and the
runner re-attaches to it, so the printed outcome is that of the one flow. ``--signal NAME=JSON``
sends the flow a signal once it has started. ``--operator-key KEY`` runs the node on a network with
a map (the node must be admitted under the key in its data directory).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from parley.node import Node, NodeConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--nats", required=True)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--app", action="append", default=[])
    parser.add_argument("--flow", required=True, help="module:Class")
    parser.add_argument("--args", default="[]", help="JSON list of constructor arguments")
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument(
        "--signal", action="append", default=[], help="NAME=JSON: a signal to send once started"
    )
    parser.add_argument(
        "--operator-key", default=None, help="the network map's operator public key (O...)"
    )
    options = parser.parse_args(argv)
    module_name, _, class_name = options.flow.partition(":")
    flow_class = getattr(importlib.import_module(module_name), class_name)
    config = NodeConfig(
        name=options.name,
        data_dir=options.data_dir,
        nats_url=options.nats,
        apps=[module_name, *options.app],
        workers=2,
        operator_key=options.operator_key,
    )
    with Node(config) as node:
        handle = node.start_flow(flow_class(*json.loads(options.args)), client_id=options.client_id)
        for signal in options.signal:
            name, _, value = signal.partition("=")
            node.signal(handle.flow_id, name, json.loads(value))
        try:
            outcome = {"result": handle.result(options.timeout)}
        except Exception as exc:
            outcome = {"error": type(exc).__name__, "message": str(exc)}
    print(json.dumps(outcome), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
