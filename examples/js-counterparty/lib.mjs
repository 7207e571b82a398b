// A Parley node in JavaScript, written from docs/wire.md and docs/wire.cddl alone.
//
// It speaks wire version 1: envelopes and batches (CBOR), the session protocol (Init, Confirm,
// Data, Error, Reject, End with per-direction sequence numbers), Ed25519 signatures in the
// Parley-Sig header, and the JetStream layout (one work-queue stream and one durable pull
// consumer per node). It keeps its sessions in memory: a real counterparty would make its state
// durable before acking what it consumed (docs/wire.md, "Acknowledgements").

import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";

import { Tag, decode, encode } from "cbor2";

export { Tag };
import {
  AckPolicy,
  DeliverPolicy,
  RetentionPolicy,
  StorageType,
  connect,
  headers,
  nanos,
} from "nats";
import { fromPublic, fromSeed } from "nkeys.js";

export const WIRE_VERSION = 1;
export const TAG_TUPLE = 40100;
export const TAG_OBJECT = 40110;
export const TAG_EXCEPTION = 40112;
export const SIGNATURE_HEADER = "Parley-Sig";
const NODE_NAME = /^[A-Za-z0-9_-]{1,128}$/;
const MAX_BATCH = 1000;
const KEYS = ["v", "id", "sender", "recipient", "kind", "body"];

// Each kind's body: its registered name and its fields, in order (docs/wire.cddl).
const BODIES = {
  init: ["p.Init", ["initiator_session", "flow_class", "flow_version", "app", "first_payload"]],
  confirm: ["p.Confirm", ["session", "initiated_session", "flow_version", "app"]],
  data: ["p.Data", ["session", "seq", "payload"]],
  error: ["p.Error", ["session", "seq", "error_id", "exception"]],
  reject: ["p.Reject", ["session", "error_id", "reason"]],
  end: ["p.End", ["session", "seq"]],
};
const TEXT = new Set([
  "initiator_session", "flow_class", "app", "session", "initiated_session", "error_id", "reason",
]);
const OPTIONAL = new Set(["first_payload", "exception"]);

// ---- Values --------------------------------------------------------------------------------

/** A Python tuple: tag 40100 over its items. */
export const tuple = (...items) => new Tag(TAG_TUPLE, items);

/** Whether `value` is a CBOR integer as cbor2 decodes it (JS numbers are also floats). */
export const isInt = (value) =>
  typeof value === "bigint" || (typeof value === "number" && Number.isInteger(value));

/** `value + 1` for an integer, switching to BigInt past 2^53 so that nothing is rounded. */
export const plusOne = (value) => {
  if (typeof value === "bigint") return value + 1n;
  return Number.isSafeInteger(value + 1) ? value + 1 : BigInt(value) + 1n;
};

/** Encode a payload: one separate CBOR document, carried as a byte string. */
export const encodePayload = (value) => encode(value);

/** Decode a payload; tags other than the whitelist's stay `Tag` objects for the caller. */
export const decodePayload = (bytes) => decode(bytes);

// ---- Envelopes -----------------------------------------------------------------------------

/** Encode one envelope: `{v, id, sender, recipient, kind, body}` with the body as tag 40110. */
export function encodeEnvelope({ id, sender, recipient, kind, body }) {
  const [name, fields] = BODIES[kind];
  const values = fields.map((field) => (body[field] === undefined ? null : body[field]));
  return encode({ v: WIRE_VERSION, id, sender, recipient, kind, body: new Tag(TAG_OBJECT, [name, ...values]) });
}

/**
 * Decode one NATS message: an envelope, or a batch of them. Throws an Error with the reason
 * when the message is not well-formed (docs/wire.md, "What a receiver checks").
 */
export function decodeMessage(bytes) {
  const raw = decodeStrict(bytes);
  checkHeader(raw);
  if (raw.kind !== "batch") return [bodyOf(raw)];
  if (!Array.isArray(raw.body) || raw.body.length < 1 || raw.body.length > MAX_BATCH) {
    throw new Error(`a batch must carry 1 to ${MAX_BATCH} envelopes`);
  }
  return raw.body.map((item) => {
    if (!(item instanceof Uint8Array)) throw new Error("a batch carries encoded envelopes");
    const inner = decodeStrict(item);
    checkHeader(inner);
    if (inner.kind === "batch") throw new Error("a batch can't hold a batch");
    if (inner.sender !== raw.sender || inner.recipient !== raw.recipient) {
      throw new Error("an envelope in a batch has another sender or recipient");
    }
    return bodyOf(inner);
  });
}

function decodeStrict(bytes) {
  try {
    return decode(bytes, { rejectDuplicateKeys: true, rejectStreaming: true });
  } catch (error) {
    throw new Error(`malformed CBOR: ${error.message}`);
  }
}

function checkHeader(raw) {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw) || raw instanceof Tag) {
    throw new Error("an envelope must be a map");
  }
  const keys = Object.keys(raw).sort();
  if (keys.join() !== [...KEYS].sort().join()) throw new Error(`envelope keys ${keys}`);
  if (raw.v !== WIRE_VERSION) throw new Error(`unsupported envelope version ${raw.v}`);
  for (const key of ["id", "sender", "recipient", "kind"]) {
    if (typeof raw[key] !== "string" || raw[key] === "") throw new Error(`bad ${key}`);
  }
  for (const key of ["sender", "recipient"]) {
    if (!NODE_NAME.test(raw[key])) throw new Error(`${key} is not a node name`);
  }
}

function bodyOf(raw) {
  const layout = BODIES[raw.kind];
  if (layout === undefined) throw new Error(`unknown kind ${raw.kind}`);
  const [name, fields] = layout;
  const tag = raw.body;
  if (!(tag instanceof Tag) || Number(tag.tag) !== TAG_OBJECT || !Array.isArray(tag.contents)) {
    throw new Error("the body must be tag 40110 over an array");
  }
  const [found, ...values] = tag.contents;
  if (found !== name) throw new Error(`kind ${raw.kind} does not match body ${found}`);
  // Bodies evolve by appending fields with defaults: fewer values are filled with null.
  if (values.length > fields.length) throw new Error(`${name} has too many values`);
  const body = {};
  fields.forEach((field, i) => {
    const value = i < values.length ? values[i] : null;
    if (TEXT.has(field) && typeof value !== "string") throw new Error(`${field} must be text`);
    if (field === "seq" && !(isInt(value) && value >= 1)) throw new Error("seq must be >= 1");
    if (field === "flow_version" && !isInt(value)) throw new Error("flow_version must be an int");
    if (field === "payload" && !(value instanceof Uint8Array)) throw new Error("payload: bytes");
    if (OPTIONAL.has(field) && value !== null && !(value instanceof Uint8Array)) {
      throw new Error(`${field} must be bytes or null`);
    }
    if (!OPTIONAL.has(field) && value === null) throw new Error(`${field} is missing`);
    body[field] = value;
  });
  return { id: raw.id, sender: raw.sender, recipient: raw.recipient, kind: raw.kind, body };
}

// ---- Sessions ------------------------------------------------------------------------------

/** A flow id like Parley's (32 hex digits); our session ids are "<flow id>.<n>". */
export const newFlowId = () => randomBytes(16).toString("hex");

/** An error the peer's flow raised (an Error message): its error id and its exception, if any. */
export class PeerError extends Error {
  constructor(body) {
    const exception = body.exception ? describeException(decodePayload(body.exception)) : null;
    super(exception ? `peer raised ${exception.type}: ${exception.args.join(", ")}` : "Counter-flow errored");
    this.errorId = body.error_id;
    this.exception = exception;
  }
}

function describeException(value) {
  if (!(value instanceof Tag) || Number(value.tag) !== TAG_EXCEPTION) return null;
  const [type, args, fields] = value.contents;
  return { type, args, fields };
}

/** The peer ended the session (End) where the flow expected data. */
export class PeerEnded extends Error {}

/**
 * One session: our id, the peer's, and the sequence numbers of both directions. Messages are
 * consumed in order; duplicates are dropped; early ones wait for the gap to fill.
 */
export class Session {
  constructor(node, peer, id) {
    this.node = node;
    this.peer = peer;
    this.id = id;
    this.peerSession = null;
    this.peerInfo = null;
    this.nextSend = 1; // our Init or Confirm is seq 0
    this.nextRecv = 1; // the peer's Init or Confirm is seq 0
    this.early = new Map();
    this.inbox = [];
    this.waiting = null;
    this.closed = false;
    this.confirmed = new Promise((resolve, reject) => {
      this.onConfirm = resolve;
      this.onReject = reject;
    });
  }

  /** A sequenced message (Data, Error, End) arrived: take it in order, or drop a duplicate. */
  deliver(envelope) {
    const { seq } = envelope.body;
    if (seq < this.nextRecv || this.early.has(Number(seq))) return "duplicate";
    this.early.set(Number(seq), envelope);
    while (this.early.has(this.nextRecv)) {
      this.inbox.push(this.early.get(this.nextRecv));
      this.early.delete(this.nextRecv);
      this.nextRecv += 1;
    }
    this.wake();
    return "taken";
  }

  wake() {
    if (this.waiting !== null && this.inbox.length > 0) {
      const resolve = this.waiting;
      this.waiting = null;
      resolve();
    }
  }

  /** The peer's End has arrived (after all its data). */
  get peerEnded() {
    return this.inbox.some((envelope) => envelope.kind === "end");
  }

  /** The next payload, decoded; throws PeerError for an Error and PeerEnded for an End. */
  async receive() {
    while (this.inbox.length === 0) await new Promise((resolve) => (this.waiting = resolve));
    const head = this.inbox[0];
    if (head.kind === "end") throw new PeerEnded(`${this.peer} ended session ${this.id}`);
    this.inbox.shift();
    if (head.kind === "error") throw new PeerError(head.body);
    return decodePayload(head.body.payload);
  }

  async send(value) {
    await this.sendBody("data", { payload: encodePayload(value) });
  }

  /** Close our end: End, unless the peer ended first (then nothing is sent). */
  async end() {
    if (this.closed || this.peerEnded) return;
    this.closed = true;
    await this.sendBody("end", {});
  }

  async sendBody(kind, fields) {
    const seq = this.nextSend;
    this.nextSend += 1;
    await this.node.publish(this.peer, `${this.id}:${seq}`, kind, {
      session: this.peerSession,
      seq,
      ...fields,
    });
  }
}

// ---- The node ------------------------------------------------------------------------------

/**
 * A node on NATS: its stream and consumer, signed publishes, checked and routed receives.
 *
 * Options: url, name, seed (an NKey seed, "SU..."; without it messages go unsigned), trust
 * (node name -> public key; with it, only signed messages from those nodes are accepted).
 */
export class ParleyNode {
  constructor({ url, name, seed = null, trust = {} }) {
    if (!NODE_NAME.test(name)) throw new Error(`${name} is not a node name`);
    this.url = url;
    this.name = name;
    this.key = seed ? fromSeed(new TextEncoder().encode(seed)) : null;
    this.trust = trust;
    this.sessions = new Map();
    this.onInit = null;
    this.refused = [];
  }

  static readSeed(path) {
    return readFileSync(path, "utf8").trim();
  }

  async start() {
    this.nc = await connect({ servers: this.url, name: `parley-js-${this.name}` });
    this.js = this.nc.jetstream();
    const jsm = await this.nc.jetstreamManager();
    await ensureStream(jsm, this.name);
    const consumer = `parley-${this.name}`;
    await jsm.consumers.add(`PARLEY_${this.name}`, {
      durable_name: consumer,
      name: consumer,
      deliver_policy: DeliverPolicy.All,
      ack_policy: AckPolicy.Explicit,
      ack_wait: nanos(60_000),
      max_deliver: -1,
      max_ack_pending: 20_000,
    });
    const pull = await this.js.consumers.get(`PARLEY_${this.name}`, consumer);
    this.messages = await pull.consume({ max_messages: 256 });
    this.loop = this.receiveLoop();
    return this;
  }

  async stop() {
    await this.messages?.close();
    await this.loop;
    await this.nc?.drain();
  }

  /** Open a session with `peer`: our half of it, not yet sent (see `init`). */
  newSession(peer) {
    const session = new Session(this, peer, `${newFlowId()}.0`);
    this.sessions.set(session.id, session);
    return session;
  }

  async publish(recipient, id, kind, body) {
    const data = encodeEnvelope({ id, sender: this.name, recipient, kind, body });
    const h = headers();
    if (this.key !== null) h.set(SIGNATURE_HEADER, Buffer.from(this.key.sign(data)).toString("base64"));
    // Nats-Msg-Id (msgID) only serves JetStream's duplicate window; receivers dedupe by seq.
    await this.js.publish(`parley.p2p.${recipient}.${this.name}`, data, { msgID: id, headers: h });
  }

  async receiveLoop() {
    for await (const m of this.messages) {
      try {
        const refusal = this.check(m);
        if (refusal !== null) {
          this.refused.push(refusal);
          console.error(`refused a message on ${m.subject}: ${refusal}`);
        }
      } catch (error) {
        console.error(`handling a message failed: ${error.stack}`);
      }
      m.ack(); // in memory only: a durable node acks once its state is stored
    }
  }

  /** Check one NATS message and route its envelopes; returns why it is refused, or null. */
  check(m) {
    const prefix = `parley.p2p.${this.name}.`;
    const sender = m.subject.startsWith(prefix) ? m.subject.slice(prefix.length) : "";
    if (!NODE_NAME.test(sender)) return "bad_subject";
    if (Object.keys(this.trust).length > 0) {
      const key = this.trust[sender];
      if (key === undefined) return "unknown_node";
      const header = m.headers?.get(SIGNATURE_HEADER);
      if (!header) return "unsigned";
      const signature = Buffer.from(header, "base64");
      if (signature.length !== 64 || !fromPublic(key).verify(m.data, signature)) {
        return "bad_signature";
      }
    }
    let envelopes;
    try {
      envelopes = decodeMessage(m.data);
    } catch (error) {
      return `undecodable: ${error.message}`;
    }
    for (const envelope of envelopes) {
      if (envelope.sender !== sender) return "subject_mismatch";
      if (envelope.recipient !== this.name) return "wrong_recipient";
    }
    for (const envelope of envelopes) this.route(envelope);
    return null;
  }

  route(envelope) {
    if (envelope.kind === "init") {
      this.onInit?.(envelope);
      return;
    }
    const session = this.sessions.get(envelope.body.session);
    if (session === undefined || session.peer !== envelope.sender) return; // ended or not ours
    if (envelope.kind === "confirm") {
      if (session.peerSession !== null) return; // a duplicate Confirm
      session.peerSession = envelope.body.initiated_session;
      session.peerInfo = { flowVersion: envelope.body.flow_version, app: envelope.body.app };
      session.onConfirm(session.peerInfo);
    } else if (envelope.kind === "reject") {
      session.onReject(new Error(envelope.body.reason));
      this.sessions.delete(session.id);
    } else {
      session.deliver(envelope);
    }
  }

  /** Refuse a session-init: Reject with the reason, under the id "reject:<initiator session>". */
  async reject(init, reason) {
    const id = `reject:${init.body.initiator_session}`;
    await this.publish(init.sender, id, "reject", {
      session: init.body.initiator_session,
      error_id: id,
      reason,
    });
  }
}

/** Create the node's stream as every node does; one that exists already is used as it is. */
async function ensureStream(jsm, name) {
  const config = {
    name: `PARLEY_${name}`,
    subjects: [`parley.p2p.${name}.>`],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    duplicate_window: nanos(120_000),
    num_replicas: 1,
  };
  try {
    await jsm.streams.add(config);
  } catch (error) {
    if (error?.api_error?.err_code !== 10058) throw error; // 10058: exists, other settings
  }
}

/** Print one event as a JSON line on stdout (what the tests read). */
export function emit(event) {
  process.stdout.write(`${JSON.stringify(event, (_, v) => (typeof v === "bigint" ? v.toString() : v))}\n`);
}

/** The trust map from `--trust name=KEY` options. */
export function trustOf(options) {
  return Object.fromEntries((options ?? []).map((entry) => entry.split("=", 2)));
}
