// node-q 2.7.0 as a client of qgate, with node's own test runner (`node --test`).
//
// Run by `cargo xtask clients`, which runs `npm ci` here and passes the path of the echo
// test-double server in QGATE_ECHO_BIN (without it, target/debug/qgate-echo is used).
//
// node-q sends capability 3 and needs the handshake's one byte alone in its own chunk; it treats
// every message but a `(`upd;...)` list as the next response, so the server must never push.

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
const ECHO_BIN = process.env.QGATE_ECHO_BIN || path.join(ROOT, "target", "debug", "qgate-echo");

// The password files, as in tests/clients/python/cases.py.
const PASSWORD = "password";
const MD5_HEX = "5f4dcc3b5aa765d61d8327deb882cf99";
const SHA1_HEX = "5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8";
const PASSWORD_FILES = {
  plain: `admin:${PASSWORD}\n`,
  md5: `admin:${MD5_HEX}\n`,
  sha1: `admin:${SHA1_HEX}\n`,
  mixed: `admin:${PASSWORD}\nadminmd5:0x${MD5_HEX}\nadminsha:0x${SHA1_HEX}\n`,
};
const LOGINS = [
  ["plain", "admin"],
  ["md5", "admin"],
  ["sha1", "admin"],
  ["mixed", "admin"],
  ["mixed", "adminmd5"],
  ["mixed", "adminsha"],
];
const REFUSALS = [
  ["plain", "admin", "wrong"],
  ["plain", "nobody", PASSWORD],
  ["md5", "admin", MD5_HEX],
  ["sha1", "admin", "wrong"],
  ["mixed", "adminmd5", "wrong"],
  ["mixed", "adminsha", SHA1_HEX],
  ["mixed", "admin", ""],
];

// Servers started here, stopped after the tests (and by themselves when our stdin pipe to them
// closes, or after --lifetime-secs). Their logs go to files in TMP.
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), "qgate-node-"));
const started = [];

function startEcho(...args) {
  return new Promise((resolve, reject) => {
    const log = path.join(TMP, `server-${started.length}.log`);
    const child = spawn(ECHO_BIN, ["-p", "127.0.0.1:0", "--lifetime-secs", "600", ...args], {
      stdio: ["pipe", "pipe", fs.openSync(log, "w")],
    });
    started.push(child);
    const timer = setTimeout(
      () => reject(new Error(`${ECHO_BIN} did not start in 30s; see ${log}`)),
      30000,
    );
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    const lines = readline.createInterface({ input: child.stdout });
    lines.once("line", (line) => {
      clearTimeout(timer);
      const match = /^qgate listening on (127\.0\.0\.1):(\d+)$/.exec(line.trim());
      if (match) {
        resolve({ host: match[1], port: Number(match[2]), child });
      } else {
        reject(new Error(`unexpected first line from the server: ${line}; see ${log}`));
      }
    });
  });
}

function connect(server, user, password) {
  const params = { host: server.host, port: server.port, socketTimeout: 30000 };
  if (user !== undefined) {
    params.user = user;
    params.password = password;
  }
  return promisify(nodeq.connect)(params);
}

function query(con, ...args) {
  return new Promise((resolve, reject) => {
    con.k(...args, (err, result) => (err ? reject(err) : resolve(result)));
  });
}

function sendAsync(con, ...args) {
  return new Promise((resolve, reject) => {
    try {
      con.ks(...args, () => resolve());
    } catch (err) {
      reject(err);
    }
  });
}

function close(con) {
  return new Promise((resolve) => con.close(() => resolve()));
}

// What node-q itself makes of `value` after a trip through its own encoder and decoder: what the
// echo server's reply must decode to.
function local(value) {
  const bytes = libc.serialize(value);
  bytes.writeUInt8(2, 1);
  return libc.deserialize(bytes);
}

let echo;
const withFile = {};

test.before(async () => {
  echo = await startEcho();
  for (const [kind, text] of Object.entries(PASSWORD_FILES)) {
    const file = path.join(TMP, `${kind}.txt`);
    fs.writeFileSync(file, text);
    withFile[kind] = await startEcho("-U", file);
  }
});

test.after(() => {
  for (const child of started) {
    child.stdin.end();
    child.kill("SIGTERM");
  }
});

for (const [kind, user] of LOGINS) {
  test(`login accepted: ${kind} ${user}`, async () => {
    const con = await connect(withFile[kind], user, PASSWORD);
    try {
      assert.equal(await query(con, "ping"), "ping");
    } finally {
      await close(con);
    }
  });
}

for (const [kind, user, password] of REFUSALS) {
  test(`login refused: ${kind} ${user} ${password || "(empty)"}`, async () => {
    await assert.rejects(connect(withFile[kind], user, password), /wrong auth|closes/);
  });
}

test("login without credentials (anonymous)", async () => {
  const con = await connect(echo);
  try {
    assert.equal(await query(con, "ping"), "ping");
  } finally {
    await close(con);
  }
});

test("sync", async () => {
  const con = await connect(echo, "user", "pass");
  try {
    assert.equal(await query(con, "ping"), "ping");
    assert.deepEqual(await query(con, "f", 1, "`x"), ["f", 1, "x"]);
  } finally {
    await close(con);
  }
});

test("async messages arrive in order", async () => {
  const con = await connect(echo, "user", "pass");
  try {
    for (let i = 0; i < 20; i++) {
      await sendAsync(con, "tick", nodeq.long(Long.fromNumber(i)));
    }
    await sendAsync(con, "err:dropped");
    await sendAsync(con, "last");
    const received = await query(con, "asyncs");
    const expected = [];
    for (let i = 0; i < 20; i++) {
      expected.push(["tick", i]);
    }
    expected.push("err:dropped", "last");
    assert.deepEqual(received, expected);
  } finally {
    await close(con);
  }
});

test("a q error is an Error", async () => {
  const con = await connect(echo, "user", "pass");
  try {
    await assert.rejects(query(con, "err:boom"), (err) => {
      assert.ok(err instanceof Error);
      assert.equal(err.message, "boom");
      return true;
    });
    assert.equal(await query(con, "after"), "after");
  } finally {
    await close(con);
  }
});

const date = (text) => new Date(text);

// Everything node-q can write: it has no table encoder, and reads every number back as a JS
// number (longs too, by default).
const VALUES = {
  float: 3.234,
  float_null: null,
  float_inf: Infinity,
  float_neg_inf: -Infinity,
  boolean: true,
  string: "hello",
  string_empty: "",
  symbol: "`abc",
  symbol_utf8: "`größe",
  datetime: date("2001-01-01T12:00:00.000Z"),
  generic_null: null,
  boolean_typed: nodeq.boolean(false),
  guid: nodeq.guid("8c680a01-5a49-5aab-5a65-d4bfddb6a661"),
  guid_null: nodeq.guid(null),
  byte: nodeq.byte(42),
  short: nodeq.short(-234),
  short_null: nodeq.short(null),
  short_inf: nodeq.short(Infinity),
  int: nodeq.int(7),
  int_null: nodeq.int(null),
  int_neg_inf: nodeq.int(-Infinity),
  long: nodeq.long(Long.fromString("4611686018427387904")),
  long_null: nodeq.long(null),
  long_inf: nodeq.long(Infinity),
  real: nodeq.real(5.5),
  real_null: nodeq.real(null),
  char: nodeq.char("a"),
  symbol_typed: nodeq.symbol("abc"),
  symbol_null: nodeq.symbol(null),
  timestamp: nodeq.timestamp(date("2018-01-26T01:49:00.884Z")),
  timestamp_null: nodeq.timestamp(null),
  month: nodeq.month(date("2001-01-01T00:00:00.000Z")),
  month_null: nodeq.month(null),
  date: nodeq.date(date("2001-01-01T00:00:00.000Z")),
  date_null: nodeq.date(null),
  datetime_typed: nodeq.datetime(date("2001-01-01T12:00:00.500Z")),
  timespan: nodeq.timespan(date("2000-01-01T05:36:57.600Z")),
  minute: nodeq.minute(date("2000-01-01T12:01:00.000Z")),
  second: nodeq.second(date("2000-01-01T12:05:00.000Z")),
  time: nodeq.time(date("2000-01-01T12:04:59.123Z")),
  time_null: nodeq.time(null),
  floats: [1.5, 2.5, null],
  booleans: [true, false, true],
  strings: ["one", "two"],
  symbols: ["`the", "`quick"],
  list: [1, "`foo", "bar", true],
  list_empty: [],
  list_nested: [[1, 2], ["`a", [true]]],
  dict: { a: 1, b: "`x", c: [1, 2] },
  dict_nested: { a: { b: { c: "deep" } } },
  bytes: nodeq.bytes([0, 1, 127]),
  shorts: nodeq.shorts([1, -32768, 32767]),
  ints: nodeq.ints([1, 2, 3]),
  longs: nodeq.longs([Long.fromNumber(1), Long.fromNumber(-2)]),
  reals: nodeq.reals([5.5, 0.25]),
  guids: nodeq.guids(["8c680a01-5a49-5aab-5a65-d4bfddb6a661"]),
  chars: nodeq.chars(["a", "b"]),
  symbols_typed: nodeq.symbols(["a", "b"]),
  timestamps: nodeq.timestamps([date("2020-01-01T00:00:00.000Z")]),
  months: nodeq.months([date("2013-06-01T00:00:00.000Z")]),
  dates: nodeq.dates([date("2013-06-10T00:00:00.000Z")]),
  datetimes: nodeq.datetimes([date("2013-06-10T12:00:00.000Z")]),
  timespans: nodeq.timespans([date("2000-01-01T00:00:01.000Z")]),
  minutes: nodeq.minutes([date("2000-01-01T00:21:00.000Z")]),
  seconds: nodeq.seconds([date("2000-01-01T00:00:21.000Z")]),
  times: nodeq.times([date("2000-01-01T00:00:00.021Z")]),
};

for (const [name, value] of Object.entries(VALUES)) {
  test(`round trip: ${name}`, async () => {
    const con = await connect(echo, "user", "pass");
    try {
      const reply = await query(con, "echo", value);
      assert.deepEqual(reply, local(["echo", value]));
    } finally {
      await close(con);
    }
  });
}

test("a request and a reply over 2000 bytes", async () => {
  const con = await connect(echo, "user", "pass");
  try {
    const numbers = Array.from({ length: 3000 }, (_, i) => i * 7919);
    assert.ok(libc.serialize(numbers).length > 2000);
    const reply = await query(con, "echo", numbers);
    assert.deepEqual(reply, ["echo", numbers]);
    const text = "q".repeat(100000);
    assert.equal(await query(con, text), text);
  } finally {
    await close(con);
  }
});
