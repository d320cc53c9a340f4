// node-q 2.7.0 over TLS (`useTLS: true`) against the real `qgate serve`, with certificates from
// `qgate certs` and the whoami fixture plugin, which answers with what the session knows.
//
// Run by `cargo xtask clients`, which passes the path of `qgate` in QGATE_BIN (without it,
// target/debug/qgate is used). The plugin is built by `cargo xtask plugins`.
//
// node-q hands its `ca` option to node's tls.connect: the client trusts the development CA alone,
// so the server must send the intermediate after its certificate for the chain to verify. node-q
// has no option for a client certificate, so mutual TLS is covered by the Python and Rust tests.

"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const { spawn, execFileSync } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const readline = require("node:readline");
const { promisify } = require("node:util");

const nodeq = require("node-q");

const ROOT = path.resolve(__dirname, "..", "..", "..");
const QGATE_BIN = process.env.QGATE_BIN || path.join(ROOT, "target", "debug", "qgate");
const WHOAMI = path.join(ROOT, "plugins", "target", "wasm32-wasip2", "release", "whoami.wasm");

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), "qgate-node-tls-"));
const CERTS = path.join(TMP, "certs");
const started = [];

function startQgate(mode) {
  const config = path.join(TMP, `qgate-${mode}.toml`);
  fs.writeFileSync(
    config,
    [
      "[tls]",
      `mode = "${mode}"`,
      `cert_file = "${path.join(CERTS, "server.pem")}"`,
      `key_file = "${path.join(CERTS, "server.key")}"`,
      "[[plugins]]",
      'name = "whoami"',
      `path = "${WHOAMI}"`,
      "",
    ].join("\n"),
  );
  return new Promise((resolve, reject) => {
    const log = path.join(TMP, `qgate-${mode}.log`);
    const child = spawn(QGATE_BIN, ["serve", "--config", config, "-p", "127.0.0.1:0"], {
      stdio: ["ignore", "pipe", fs.openSync(log, "w")],
    });
    started.push(child);
    // A debug build compiles the plugin at start.
    const timer = setTimeout(
      () => reject(new Error(`${QGATE_BIN} did not start in 120s; see ${log}`)),
      120000,
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
        resolve({ host: match[1], port: Number(match[2]), child, log });
      } else {
        reject(new Error(`unexpected first line from the server: ${line}; see ${log}`));
      }
    });
  });
}

function connect(server, useTLS) {
  const params = {
    host: server.host,
    port: server.port,
    user: "dana",
    password: "pw",
    socketTimeout: 30000,
  };
  if (useTLS) {
    params.useTLS = true;
    params.ca = fs.readFileSync(path.join(CERTS, "ca.pem"));
  }
  return promisify(nodeq.connect)(params);
}

function query(con, text) {
  return new Promise((resolve, reject) => {
    con.k(text, (err, result) => (err ? reject(err) : resolve(result)));
  });
}

function close(con) {
  return new Promise((resolve) => con.close(() => resolve()));
}

let required;
let optional;

test.before(async () => {
  assert.ok(fs.existsSync(WHOAMI), `${WHOAMI} is missing: run \`cargo xtask plugins\``);
  execFileSync(QGATE_BIN, ["certs", "--out", CERTS]);
  required = await startQgate("required");
  optional = await startQgate("optional");
});

test.after(() => {
  for (const child of started) {
    child.kill("SIGTERM");
  }
});

test("node-q connects with useTLS, trusting only the root, and queries", async () => {
  const con = await connect(required, true);
  try {
    const facts = await query(con, "whoami");
    assert.equal(facts.user, "dana");
    assert.match(facts.protocol, /^TLSv1\.[23]$/);
    assert.equal(facts.cn, "");
  } finally {
    await close(con);
  }
});

test("node-q without TLS is refused when TLS is required", async () => {
  await assert.rejects(connect(required, false));
  assert.match(fs.readFileSync(required.log, "utf8"), /this port requires TLS/);
});

test("node-q plain and over TLS on one port", async () => {
  const plain = await connect(optional, false);
  try {
    const facts = await query(plain, "whoami");
    assert.equal(facts.user, "dana");
    assert.equal(facts.protocol, "");
  } finally {
    await close(plain);
  }
  const secure = await connect(optional, true);
  try {
    const facts = await query(secure, "whoami");
    assert.match(facts.protocol, /^TLSv1\.[23]$/);
  } finally {
    await close(secure);
  }
});
