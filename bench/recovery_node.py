"""A node that starts ``count`` Recoverable flows and runs until the recovery benchmark kills it.

    python -m bench.recovery_node --name N --nats URL --data-dir DIR --count 10000 --steps 3

Prints ``started`` once every flow is durable (its first checkpoint committed).
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from bench.flows import Recoverable
from parley.node import Node, NodeConfig


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--nats", required=True)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--steps", type=int, default=3)
    options = parser.parse_args()
    config = NodeConfig(options.name, options.data_dir, nats_url=options.nats, apps=["bench.flows"])
    node = Node(config).start()
    handles = [
        node.start_flow(Recoverable(n, options.steps), wait_started=False)
        for n in range(options.count)
    ]
    for handle in handles:
        handle.started.result(300)
    print("started", flush=True)
    threading.Event().wait()  # until killed
    return 0


if __name__ == "__main__":
    sys.exit(main())
