// opsdeck: the browser's one live connection, shared by all its tabs
// (docs/live.md, "Sharing it among tabs").
//
// The wasm of every page imports `open` from here (the import map names this
// file "opsdeck-live"); each tab's subscriptions (the feed, the job it
// shows) go to one *hub*, which holds the browser's single `GET /api/live`
// connection and its subscribe and unsubscribe requests. Where the hub runs:
//
//   1. in a shared worker: this very file, started as a module worker, so
//      the connection lives as long as any tab does;
//   2. without shared workers: in one leader tab, elected with Web Locks,
//      which talks to the other tabs over a BroadcastChannel; when it
//      closes, the lock passes to another tab, which becomes the hub, and
//      every tab subscribes again there from its own cursors;
//   3. without either: in the tab itself (one connection per tab).
//
// The tab keeps each subscription's last cursor and resubscribes from it
// after a hand-over; the hub drops what is not past a subscription's cursor
// and so does the wasm (app/src/jobs/live.rs): nothing is lost or repeated.
//
// Hub to tab: strings in the connection's own format, `<id> <name>
// <cursor>\n<json>`, with the server's subscription number replaced by the
// tab's id for it, and one name of the hub's own: `link`, data "live",
// "reconnecting" or "connecting" (id 0: all of the tab's subscriptions).
// Tab to hub: {t: 'sub', id, stream, after}, {t: 'unsub', id}, {t: 'bye'}
// (the tab is going), {t: 'held'} (it holds its tab lock, see `watch`).
//
// Written by hand, not taken from a library: it is small, the protocol is
// opsdeck's own, and it must start in a worker without the app's wasm.

const CHANNEL = 'opsdeck-live';
const LEADER_LOCK = 'opsdeck-live-leader';
const tabLock = (tab) => `opsdeck-live-tab-${tab}`;

/** One `<id> <name> <cursor>\n<json>` message's header, or null. */
function head(data) {
  const nl = data.indexOf('\n');
  if (nl < 0) return null;
  const [sub, name, cursor] = data.slice(0, nl).split(' ');
  const n = Number(sub);
  if (!Number.isInteger(n) || n < 0 || !name || cursor === undefined) return null;
  return { n, name, cursor: cursor === '-' ? null : Number(cursor), json: data.slice(nl + 1) };
}

/** The browser's one connection, and every tab's subscriptions on it. */
class Hub {
  constructor() {
    /** server sub number → {tab, id, stream, after, cursor, carried} */
    this.subs = new Map();
    /** `${tab} ${id}` → server sub number */
    this.keys = new Map();
    /** tab → function sending it a message */
    this.tabs = new Map();
    this.next = 1;
    this.es = null;
    this.conn = null;
    this.backoff = 500;
    this.waiting = false;
    /** tabs whose lock it waits for (`watch`) */
    this.watched = new Set();
  }

  /** A message from tab `tab`, which `send` answers. */
  handle(tab, send, m) {
    this.tabs.set(tab, send);
    switch (m && m.t) {
      case 'sub':
        return this.subscribe(tab, m.id, m.stream, m.after);
      case 'unsub':
        return this.unsubscribe(tab, m.id);
      case 'bye':
        return this.drop(tab);
      case 'held':
        if (!this.watched.has(tab)) {
          this.watched.add(tab);
          watch(this, tab);
        }
        return;
    }
  }

  tell(tab, data) {
    const send = this.tabs.get(tab);
    if (send) send(data);
  }

  link(sub, state) {
    this.tell(sub.tab, `${sub.id} link -\n"${state}"`);
  }

  subscribe(tab, id, stream, after) {
    const key = `${tab} ${id}`;
    // Again (a tab that resubscribes everything after a hand-over): keep it.
    if (this.keys.has(key)) return;
    const n = this.next++;
    const sub = { tab, id, stream, after: after ?? null, cursor: null, carried: false };
    this.subs.set(n, sub);
    this.keys.set(key, n);
    // N.B.: said even to a tab that thinks it is live (after a hand-over):
    // its feed must see "live" come again, which makes its tables read
    // what changed while no hub held the connection.
    this.link(sub, 'connecting');
    if (this.es && this.conn) this.post('subscribe', n, this.request(n, sub));
    else if (!this.es && !this.waiting) this.connect();
    // else: opening; its `hello` subscribes what its URL did not carry.
  }

  unsubscribe(tab, id) {
    const key = `${tab} ${id}`;
    const n = this.keys.get(key);
    if (n === undefined) return;
    const sub = this.subs.get(n);
    this.forget(n);
    if (sub.carried && this.conn) this.post('unsubscribe', n, JSON.stringify({ sub: n }));
    if (this.subs.size === 0) this.close();
  }

  /** A tab went: its subscriptions with it. */
  drop(tab) {
    for (const [n, sub] of [...this.subs]) if (sub.tab === tab) this.unsubscribe(tab, sub.id);
    this.tabs.delete(tab);
  }

  forget(n) {
    const sub = this.subs.get(n);
    if (!sub) return;
    this.subs.delete(n);
    this.keys.delete(`${sub.tab} ${sub.id}`);
  }

  /** Where a subscription resumes: after what its tab had and what came. */
  after(sub) {
    if (sub.after === null && sub.cursor === null) return null;
    return Math.max(sub.after ?? -Infinity, sub.cursor ?? -Infinity);
  }

  request(n, sub) {
    const after = this.after(sub);
    return JSON.stringify(after === null ? { sub: n, stream: sub.stream } : { sub: n, stream: sub.stream, after });
  }

  url() {
    const parts = [];
    for (const [n, sub] of this.subs) {
      const after = this.after(sub);
      parts.push(`sub=${n}:${sub.stream}${after === null ? '' : `:${after}`}`);
      sub.carried = true;
    }
    return `/api/live?${parts.join('&')}`;
  }

  connect() {
    this.waiting = false;
    if (this.es || this.subs.size === 0) return;
    let es;
    try {
      es = new EventSource(this.url());
    } catch {
      return this.schedule();
    }
    es.onmessage = (ev) => {
      if (this.es === es) this.receive(String(ev.data));
    };
    es.onerror = () => {
      if (this.es !== es) return;
      this.close();
      for (const sub of this.subs.values()) this.link(sub, 'reconnecting');
      this.schedule();
    };
    this.es = es;
  }

  close() {
    if (this.es) this.es.close();
    this.es = null;
    this.conn = null;
  }

  schedule() {
    if (this.waiting) return;
    this.waiting = true;
    const delay = this.backoff;
    this.backoff = Math.min(delay * 2, 10_000);
    setTimeout(() => this.connect(), delay);
  }

  receive(data) {
    const h = head(data);
    if (!h) return;
    if (h.n === 0) return this.control(h);
    const sub = this.subs.get(h.n);
    if (!sub) return;
    if (h.cursor !== null) {
      if (sub.cursor !== null && h.cursor <= sub.cursor) return;
      sub.cursor = h.cursor;
    }
    this.tell(sub.tab, `${sub.id} ${h.name} ${h.cursor ?? '-'}\n${h.json}`);
  }

  control(h) {
    let data;
    try {
      data = JSON.parse(h.json);
    } catch {
      return;
    }
    switch (h.name) {
      case 'hello':
        this.conn = data.conn;
        this.backoff = 500;
        for (const [n, sub] of this.subs) {
          if (sub.carried) this.link(sub, 'live');
          else this.post('subscribe', n, this.request(n, sub));
        }
        return;
      case 'ended': {
        const sub = this.subs.get(data.sub);
        if (!sub) return;
        this.forget(data.sub);
        this.tell(sub.tab, `0 ended -\n${JSON.stringify({ sub: sub.id })}`);
        if (this.subs.size === 0) this.close();
        return;
      }
      case 'revoked':
        // The session is over for every tab: each shows why, and a tab
        // signed in again later opens a new connection.
        for (const tab of this.tabs.keys()) this.tell(tab, `0 revoked -\n${h.json}`);
        this.subs.clear();
        this.keys.clear();
        this.close();
        return;
    }
  }

  /**
   * `POST /api/live/{conn}/{what}`. A subscribe that fails (the connection
   * ended, or another replica holds it) reopens the connection, whose URL
   * then carries the subscription.
   */
  async post(what, n, body) {
    const conn = this.conn;
    let ok = false;
    try {
      const res = await fetch(`/api/live/${conn}/${what}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
      });
      ok = res.ok;
    } catch {
      ok = false;
    }
    if (what !== 'subscribe' || this.conn !== conn) return;
    const sub = this.subs.get(n);
    if (!sub) return;
    if (ok) {
      sub.carried = true;
      this.link(sub, 'live');
    } else {
      this.close();
      for (const s of this.subs.values()) this.link(s, 'reconnecting');
      this.schedule();
    }
  }
}

/**
 * When a tab dies without saying `bye` (a crash, a killed process), the
 * hub still learns it: each tab holds a lock named after it for its whole
 * life, and the hub asks for that lock; it is granted when the tab is gone.
 */
function watch(hub, tab) {
  if (!globalThis.navigator?.locks) return;
  navigator.locks.request(tabLock(tab), () => hub.drop(tab));
}

function holdTabLock(tab, held) {
  if (!globalThis.navigator?.locks) return;
  navigator.locks.request(tabLock(tab), () => {
    held();
    return new Promise(() => {});
  });
}

// ---- 1. The shared worker: this file, started by `open` below. ----

if (typeof SharedWorkerGlobalScope === 'function' && globalThis instanceof SharedWorkerGlobalScope) {
  const hub = new Hub();
  globalThis.onconnect = (e) => {
    const port = e.ports[0];
    port.onmessage = (ev) => {
      const { tab, m } = ev.data || {};
      if (typeof tab !== 'string') return;
      hub.handle(tab, (data) => port.postMessage(data), m);
    };
    port.start();
  };
}

// ---- The tab's side. ----

/** A tab's subscriptions, so that it can make them again elsewhere. */
class Client {
  constructor(tab, deliver) {
    this.tab = tab;
    this.deliver = deliver;
    /** id → {stream, after, cursor} */
    this.subs = new Map();
    this.send = () => {};
  }

  subscribe(id, stream, after) {
    this.subs.set(id, { stream, after: after ?? null, cursor: null });
    this.send({ t: 'sub', id, stream, after: after ?? null });
  }

  unsubscribe(id) {
    if (this.subs.delete(id)) this.send({ t: 'unsub', id });
  }

  /** A message from the hub: noted, then handed to the wasm. */
  receive(data) {
    const h = typeof data === 'string' ? head(data) : null;
    if (!h) return;
    if (h.n === 0 && (h.name === 'ended' || h.name === 'revoked')) {
      if (h.name === 'revoked') this.subs.clear();
      else {
        try {
          this.subs.delete(JSON.parse(h.json).sub);
        } catch {
          // not ours to judge: the wasm reads it
        }
      }
    } else if (h.n !== 0) {
      const sub = this.subs.get(h.n);
      if (sub && h.cursor !== null) sub.cursor = Math.max(sub.cursor ?? -Infinity, h.cursor);
    }
    this.deliver(data);
  }

  /** Every subscription again, each from where it stands (a new hub). */
  resubscribe() {
    for (const [id, sub] of this.subs) {
      let after = sub.after;
      if (sub.cursor !== null) after = Math.max(after ?? -Infinity, sub.cursor);
      this.send({ t: 'sub', id, stream: sub.stream, after });
    }
  }
}

function randomTab() {
  const a = new Uint32Array(4);
  crypto.getRandomValues(a);
  return Array.from(a, (x) => x.toString(16).padStart(8, '0')).join('');
}

/** How this tab reaches the hub, for tests and for a curious operator. */
function mark(how) {
  if (globalThis.document) document.documentElement.dataset.live = how;
}

/** The hub in this tab (the leader's, or the tab's own). */
function local(client, hub) {
  client.send = (m) => hub.handle(client.tab, (data) => client.receive(data), m);
}

function viaWorker(client) {
  const worker = new SharedWorker(import.meta.url, { type: 'module', name: 'opsdeck-live' });
  const port = worker.port;
  port.onmessage = (ev) => client.receive(ev.data);
  port.start();
  client.send = (m) => port.postMessage({ tab: client.tab, m });
  holdTabLock(client.tab, () => port.postMessage({ tab: client.tab, m: { t: 'held' } }));
  addEventListener('pagehide', () => port.postMessage({ tab: client.tab, m: { t: 'bye' } }));
  addEventListener('pageshow', (e) => {
    if (e.persisted) client.resubscribe();
  });
  // A worker that cannot start (its script refused, say): the next way.
  worker.onerror = () => {
    worker.onerror = null;
    port.onmessage = null;
    viaLeader(client);
    client.resubscribe();
  };
  mark('worker');
}

function viaLeader(client) {
  if (!globalThis.navigator?.locks || typeof BroadcastChannel !== 'function') {
    local(client, new Hub());
    mark('tab');
    return;
  }
  const channel = new BroadcastChannel(CHANNEL);
  let hub = null;
  client.send = (m) => {
    if (hub) hub.handle(client.tab, (data) => client.receive(data), m);
    else channel.postMessage({ to: 'leader', from: client.tab, m });
  };
  channel.onmessage = (ev) => {
    const msg = ev.data || {};
    if (msg.to === client.tab) return client.receive(msg.data);
    // A new leader: it knows none of this tab's subscriptions yet, nor
    // that the tab holds its lock.
    if (msg.t === 'leader' && !hub) {
      if (held) client.send({ t: 'held' });
      return client.resubscribe();
    }
    if (msg.to === 'leader' && hub && typeof msg.from === 'string') {
      const from = msg.from;
      hub.handle(from, (data) => channel.postMessage({ to: from, data }), msg.m);
    }
  };
  let held = false;
  holdTabLock(client.tab, () => {
    held = true;
    client.send({ t: 'held' });
  });
  addEventListener('pagehide', () => {
    if (!hub) client.send({ t: 'bye' });
  });
  mark('follower');
  navigator.locks.request(LEADER_LOCK, () => {
    hub = new Hub();
    mark('leader');
    channel.postMessage({ t: 'leader' });
    client.resubscribe();
    // Held for the tab's life: closing it passes the lock on.
    return new Promise(() => {});
  });
}

/**
 * Opens this tab's way to the hub. `deliver(data)` is called with each
 * message for the tab; the returned client's `subscribe(id, stream,
 * after)` and `unsubscribe(id)` manage its subscriptions.
 */
export function open(deliver) {
  const client = new Client(randomTab(), deliver);
  let shared = false;
  if (typeof SharedWorker === 'function') {
    try {
      viaWorker(client);
      shared = true;
    } catch {
      shared = false;
    }
  }
  if (!shared) viaLeader(client);
  return client;
}
