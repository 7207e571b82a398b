// Pong, in JavaScript: the responder to parley.apps.pingpong:Ping.
//
//   node responder.mjs --nats URL --name NODE [--seed-file FILE] [--trust PEER=KEY ...]
//
// Each message from Ping carries (rounds still to go, value); Pong answers value + 1 until no
// round is left, then ends its side of the session. Inits for any other flow, or for a version
// of Ping this responder does not serve, are rejected with the reason. Prints one JSON line per
// event on stdout ("ready", then "served" or "rejected" per session); SIGTERM stops it.

import { parseArgs } from "node:util";

import { ParleyNode, PeerEnded, PeerError, Tag, TAG_TUPLE, emit, isInt, plusOne, trustOf } from "./lib.mjs";

const PING = "parley.apps.pingpong:Ping";
const VERSIONS = [1, 1]; // the versions of Ping this responder serves
const APP = "js-counterparty"; // our "module": what the initiator sees as our app

const { values: options } = parseArgs({
  options: {
    nats: { type: "string" },
    name: { type: "string" },
    "seed-file": { type: "string" },
    trust: { type: "string", multiple: true },
  },
});

const node = new ParleyNode({
  url: options.nats,
  name: options.name,
  seed: options["seed-file"] ? ParleyNode.readSeed(options["seed-file"]) : null,
  trust: trustOf(options.trust),
});
const seen = new Set(); // (sender, initiator session) of every init taken: copies are dropped

node.onInit = (init) => {
  const key = `${init.sender}\u0000${init.body.initiator_session}`;
  if (seen.has(key)) return;
  seen.add(key);
  respond(init).catch((error) => console.error(`session from ${init.sender} failed: ${error.stack}`));
};

async function respond(init) {
  const { flow_class: flowClass, flow_version: version } = init.body;
  const refusal =
    flowClass !== PING
      ? `${flowClass} is not registered`
      : version < VERSIONS[0] || version > VERSIONS[1]
        ? `${PING} version ${version} is not supported here (this node serves versions ${VERSIONS[0]} to ${VERSIONS[1]})`
        : null;
  if (refusal !== null) {
    await node.reject(init, refusal);
    emit({ event: "rejected", peer: init.sender, flow_class: flowClass, version, reason: refusal });
    return;
  }
  const session = node.newSession(init.sender);
  session.peerSession = init.body.initiator_session;
  session.peerInfo = { flowVersion: version, app: init.body.app };
  // The Init's first payload is the first message of the initiator's direction: no seq of its own.
  if (init.body.first_payload !== null) {
    session.inbox.push({ kind: "data", body: { seq: 0, payload: init.body.first_payload } });
  }
  await node.publish(init.sender, `${session.id}:0`, "confirm", {
    session: init.body.initiator_session,
    initiated_session: session.id,
    flow_version: VERSIONS[1],
    app: APP,
  });
  const replies = [];
  try {
    let remaining = 1;
    while (remaining > 0) {
      const [rounds, value] = roundOf(await session.receive());
      replies.push(plusOne(value));
      await session.send(plusOne(value));
      remaining = rounds - 1;
    }
    await session.end();
    emit({ event: "served", peer: init.sender, session: session.id, replies });
  } catch (error) {
    if (!(error instanceof PeerError || error instanceof PeerEnded)) throw error;
    emit({ event: "peer_failed", peer: init.sender, session: session.id, error: error.message });
  } finally {
    node.sessions.delete(session.id);
  }
}

/** Check what Ping sent: a tuple (tag 40100) of two ints. The peer is not trusted. */
function roundOf(message) {
  if (!(message instanceof Tag) || Number(message.tag) !== TAG_TUPLE || message.contents.length !== 2) {
    throw new Error(`expected a tuple (rounds, value), got ${String(message)}`);
  }
  const [rounds, value] = message.contents;
  if (!isInt(rounds) || !isInt(value)) throw new Error("expected two ints");
  return [Number(rounds), value];
}

await node.start();
emit({ event: "ready", name: node.name });
process.on("SIGTERM", async () => {
  await node.stop();
  process.exit(0);
});
