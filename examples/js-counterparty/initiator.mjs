// Ping, in JavaScript: starts parley.apps.pingpong:Ping with a Parley node running Pong.
//
//   node initiator.mjs --nats URL --name NODE --peer PEER [--n 0] [--rounds 1] [--version 1]
//                      [--seed-file FILE] [--trust PEER=KEY ...]
//
// Sends (rounds, n) in the Init, then each reply back with one round fewer, and prints the last
// reply: {"event": "result", "result": ...}. A refused session prints {"event": "rejected",
// "reason": ...}; a failed peer {"event": "peer_failed", ...}. Exits 0 in every such case.

import { parseArgs } from "node:util";

import { ParleyNode, PeerEnded, PeerError, emit, encodePayload, isInt, trustOf, tuple } from "./lib.mjs";

const PING = "parley.apps.pingpong:Ping";

const { values: options } = parseArgs({
  options: {
    nats: { type: "string" },
    name: { type: "string" },
    peer: { type: "string" },
    n: { type: "string", default: "0" },
    rounds: { type: "string", default: "1" },
    version: { type: "string", default: "1" },
    "seed-file": { type: "string" },
    trust: { type: "string", multiple: true },
    timeout: { type: "string", default: "30" },
  },
});

const node = await new ParleyNode({
  url: options.nats,
  name: options.name,
  seed: options["seed-file"] ? ParleyNode.readSeed(options["seed-file"]) : null,
  trust: trustOf(options.trust),
}).start();
const timer = setTimeout(() => {
  emit({ event: "timeout" });
  process.exit(3);
}, Number(options.timeout) * 1000);

const session = node.newSession(options.peer);
const rounds = Number(options.rounds);
let value = BigInt(options.n);
try {
  // The first payload travels in the Init (seq 0 of our direction); our next Data is seq 1.
  await node.publish(options.peer, `${session.id}:0`, "init", {
    initiator_session: session.id,
    flow_class: PING,
    flow_version: Number(options.version),
    app: "parley.apps.pingpong", // the module of the initiating flow class
    first_payload: encodePayload(tuple(rounds, value)),
  });
  const info = await session.confirmed;
  for (let remaining = rounds; remaining > 0; remaining -= 1) {
    if (remaining < rounds) await session.send(tuple(remaining, value));
    const reply = await session.receive();
    if (!isInt(reply)) throw new Error(`expected an int, got ${String(reply)}`);
    value = BigInt(reply);
  }
  await session.end(); // nothing is sent if Pong's End came first
  emit({ event: "result", result: value, peer_flow_version: info.flowVersion, peer_app: info.app });
} catch (error) {
  if (error instanceof PeerError || error instanceof PeerEnded) {
    emit({ event: "peer_failed", error: error.message, error_id: error.errorId ?? null });
  } else if (session.peerSession === null) {
    emit({ event: "rejected", reason: error.message });
  } else {
    throw error;
  }
} finally {
  clearTimeout(timer);
  await node.stop();
}
