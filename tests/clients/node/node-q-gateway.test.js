// node-q 2.7.0 through qgate's gateway mode: the real `qgate serve` in front of the test
// upstream (`qgate-upstream`), pinned (the README's one-liner, `qgate serve -p PORT -U
// passwords.txt --upstream HOST:PORT`) and pooled (an `[[upstream]]` table with a service
// account whose password is in `password_env`).
//
// Run by `cargo xtask clients`, which passes the paths of `qgate` and `qgate-upstream` in
// QGATE_BIN and QGATE_UPSTREAM_BIN (without them, the debug builds under target/ are used).
//
// node-q takes every message but a `(`upd;...)` list as the next response, so nothing here makes
// the upstream push anything else; a pinned session's publications reach it as `upd` events.

"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const { spawn } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const readline = require("node:readline");
const { promisify } = require("node:util");

const nodeq = require("node-q");
const libc = require("node-q/lib/c.js");
const Long = require("long");

const ROOT = path.resolve(__dirname, "..", "..", "..");
const QGATE_BIN = process.env.QGATE_BIN || path.join(ROOT, "target", "debug", "qgate");
const UPSTREAM_BIN =
  process.env.QGATE_UPSTREAM_BIN || path.join(ROOT, "target", "debug", "qgate-upstream");

// The gateways' password file, as cases.PASSWORD_FILES["mixed"] in tests/clients/python.
const PASSWORD = "password";
const PASSWORD_FILE = [
  `admin:${PASSWORD}`,
  "adminmd5:0x5f4dcc3b5aa765d61d8327deb882cf99",
  "adminsha:0x5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8",
  "",
].join("\n");
const USERS = ["admin", "adminmd5", "adminsha"];
// The pooled gateway's service account, which its upstream alone accepts.
const SERVICE_USER = "svc";
const SERVICE_PASSWORD = "s3cret";

// A reply far larger than one read or one streamed chunk (qgate streams replies over 64 KiB in
// 256 KiB pieces). Smaller than the Python clients' 20 MB: node-q copies its whole receive buffer
// at every socket read (quadratic in the reply's size) and decodes a byte vector byte by byte
// into a JavaScript array, which takes over ten seconds for 20 MB here.
const LARGE_REPLY = 4000000;

// Servers started here, stopped after the tests (and by themselves when our stdin pipe to them
// closes, or after --lifetime-secs). Their logs go to files in TMP.
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), "qgate-node-gateway-"));
const started = [];

function start(bin, args, env) {
  return new Promise((resolve, reject) => {
    const log = path.join(TMP, `server-${started.length}.log`);
    const child = spawn(bin, args, {
      stdio: ["pipe", "pipe", fs.openSync(log, "w")],
      env: { ...process.env, ...env },
    });
    started.push(child);
    const timer = setTimeout(
      () => reject(new Error(`${bin} did not start in 60s; see ${log}`)),
      60000,
    );
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    const lines = readline.createInterface({ input: child.stdout });
    lines.once("line", (line) => {
      clearTimeout(timer);
      const match = /^qgate(?:-upstream)? listening on (127\.0\.0\.1):(\d+)$/.exec(line.trim());
      if (match) {
        resolve({ host: match[1], port: Number(match[2]), child, log });
      } else {
        reject(new Error(`unexpected first line from ${bin}: ${line}; see ${log}`));
      }
    });
  });
}

function startUpstream(...args) {
  return start(UPSTREAM_BIN, ["-p", "127.0.0.1:0", "--lifetime-secs", "600", ...args]);
}

function startQgate(args, env) {
  return start(QGATE_BIN, ["serve", "-p", "127.0.0.1:0", ...args], env);
}

function connect(server, user = USERS[0], password = PASSWORD) {
  return promisify(nodeq.connect)({
    host: server.host,
    port: server.port,
    user,
    password,
    socketTimeout: 60000,
  });
}

function query(con, ...args) {
  return new Promise((resolve, reject) => {
    con.k(...args, (err, result) => (err ? reject(err) : resolve(result)));
  });
}

function close(con) {
  return new Promise((resolve) => con.close(() => resolve()));
}

// What node-q itself makes of `value` after a trip through its own encoder and decoder: what the
// upstream's `echo` reply must decode to.
function local(value) {
  const bytes = libc.serialize(value);
  bytes.writeUInt8(2, 1);
  return libc.deserialize(bytes);
}

const gateways = {};

test.before(async () => {
  const passwords = path.join(TMP, "passwords.txt");
  fs.writeFileSync(passwords, PASSWORD_FILE);

  const open = await startUpstream("--name", "rdb");
  const pinned = await startQgate(["-U", passwords, "--upstream", `${open.host}:${open.port}`]);
  // node-q reads the null symbol (qgate logs in without a user) as null.
  gateways.pinned = { qgate: pinned, upstream: open, user: null };

  const guarded = await startUpstream("--name", "rdb", "--user", `${SERVICE_USER}:${SERVICE_PASSWORD}`);
  const config = path.join(TMP, "pooled.toml");
  fs.writeFileSync(
    config,
    [
      "[[upstream]]",
      'name = "rdb"',
      `servers = ["${guarded.host}:${guarded.port}"]`,
      'mode = "pooled"',
      "pool_size = 2",
      `user = "${SERVICE_USER}"`,
      'password_env = "QGATE_TEST_SERVICE_PASSWORD"',
      "",
    ].join("\n"),
  );
  const pooled = await startQgate(["-U", passwords, "--config", config], {
    QGATE_TEST_SERVICE_PASSWORD: SERVICE_PASSWORD,
  });
  gateways.pooled = { qgate: pooled, upstream: guarded, user: SERVICE_USER };
});

test.after(() => {
  for (const child of started) {
    child.stdin.end();
    child.kill("SIGTERM");
  }
});

// Values of several types, each echoed by the upstream through qgate.
const VALUES = {
  float: 3.234,
  float_null: null,
  boolean: true,
  string: "hello",
  symbol: "`abc",
  symbol_utf8: "`größe",
  datetime: new Date("2001-01-01T12:00:00.000Z"),
  guid: nodeq.guid("8c680a01-5a49-5aab-5a65-d4bfddb6a661"),
  byte: nodeq.byte(42),
  short: nodeq.short(-234),
  int: nodeq.int(7),
  long: nodeq.long(Long.fromString("4611686018427387904")),
  real: nodeq.real(5.5),
  timestamp: nodeq.timestamp(new Date("2018-01-26T01:49:00.884Z")),
  date: nodeq.date(new Date("2001-01-01T00:00:00.000Z")),
  timespan: nodeq.timespan(new Date("2000-01-01T05:36:57.600Z")),
  floats: [1.5, 2.5, null],
  symbols: ["`the", "`quick"],
  list: [1, "`foo", "bar", true],
  dict: { a: 1, b: "`x", c: [1, 2] },
  longs: nodeq.longs([Long.fromNumber(1), Long.fromNumber(-2)]),
  // 3000 floats: a request and a reply over q's 2000-byte compression threshold.
  many: Array.from({ length: 3000 }, (_, i) => i * 7919),
};

for (const mode of ["pinned", "pooled"]) {
  for (const user of USERS) {
    test(`${mode}: login through the password file: ${user}`, async () => {
      const gateway = gateways[mode];
      const con = await connect(gateway.qgate, user);
      try {
        const me = await query(con, "whoami", null);
        // The upstream sees qgate's login, never the client's.
        assert.equal(me.upstream, "rdb");
        assert.equal(me.user, gateway.user);
      } finally {
        await close(con);
      }
    });
  }

  test(`${mode}: refused logins`, async () => {
    for (const [user, password] of [
      ["admin", "wrong"],
      ["nobody", PASSWORD],
    ]) {
      await assert.rejects(connect(gateways[mode].qgate, user, password), /wrong auth|closes/);
    }
  });

  test(`${mode}: values round trip`, async () => {
    const con = await connect(gateways[mode].qgate);
    try {
      for (const [name, value] of Object.entries(VALUES)) {
        assert.deepEqual(await query(con, "echo", value), local(value), name);
      }
    } finally {
      await close(con);
    }
  });

  test(`${mode}: free text and q errors`, async () => {
    const gateway = gateways[mode];
    const con = await connect(gateway.qgate, "adminmd5");
    try {
      const receipt = await query(con, "select from trade where sym=`IBM");
      assert.equal(receipt.upstream, "rdb");
      assert.equal(receipt.user, gateway.user);
      assert.equal(receipt.query, "select from trade where sym=`IBM");
      await assert.rejects(query(con, "fail", "boom"), (err) => {
        assert.ok(err instanceof Error);
        assert.equal(err.message, "boom");
        return true;
      });
      // The session survives its error.
      assert.equal(await query(con, "echo", 5), 5);
    } finally {
      await close(con);
    }
  });

  test(`${mode}: a large reply`, async () => {
    const con = await connect(gateways[mode].qgate, "adminsha");
    try {
      const reply = await query(con, "bytes", nodeq.long(Long.fromNumber(LARGE_REPLY)));
      assert.equal(reply.length, LARGE_REPLY);
      for (let i = 0; i < LARGE_REPLY; i += 9973) {
        assert.equal(reply[i], i % 256, `byte ${i}`);
      }
      assert.equal(reply[LARGE_REPLY - 1], (LARGE_REPLY - 1) % 256);
      assert.equal(await query(con, "echo", 6), 6);
    } finally {
      await close(con);
    }
  });
}

test("pinned: a subscriber receives publications in order as upd events", async () => {
  // A tickerplant and a gateway of this test's own, so that `seq` counts this test's rows only.
  const passwords = path.join(TMP, "passwords.txt");
  const tickerplant = await startUpstream("--name", "tp");
  const qgate = await startQgate(["-U", passwords, "--upstream", `${tickerplant.host}:${tickerplant.port}`]);
  const subscriber = await connect(qgate);
  const publisher = await connect(qgate, "adminmd5");
  try {
    const count = 50;
    const rows = 4;
    const seqs = [];
    const received = new Promise((resolve) => {
      subscriber.on("upd", (table, data) => {
        assert.equal(table, "trade");
        for (const row of data) {
          seqs.push(row.seq);
        }
        if (seqs.length === count * rows) {
          resolve();
        }
      });
    });
    // `.u.sub[`trade;`]`: every sym.
    const [name, schema] = await query(subscriber, ".u.sub", "`trade", nodeq.symbol(null));
    assert.equal(name, "trade");
    // The empty schema table, flipped by node-q into its rows: none.
    assert.deepEqual(schema, []);
    // node-q writes a JavaScript number as a float; publish takes longs.
    const long = (n) => nodeq.long(Long.fromNumber(n));
    assert.equal(await query(publisher, "publish", "`trade", long(count), long(rows)), count);
    await received;
    // Every row, in order, without a gap.
    assert.deepEqual(
      seqs,
      Array.from({ length: count * rows }, (_, i) => i),
    );
  } finally {
    await close(subscriber);
    await close(publisher);
  }
});
