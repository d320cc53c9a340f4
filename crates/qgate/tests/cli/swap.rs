//! Replacing plugins in a running server from outside: the admin commands, SIGHUP and the file
//! watch, and a locked deployment's keys, signatures and refusals.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

use super::{PATIENCE, Server, TempDir, component_path, run, stderr, stdout};

/// The bytes of the component `name` of `plugins/`, built once per test run.
fn component(name: &str) -> Vec<u8> {
    let path = component_path(name);
    fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// Writes `bytes` beside `path` and renames them over it, as a deploy should.
fn deploy(path: &Path, bytes: &[u8]) {
    let staging = path.with_extension("staging");
    fs::write(&staging, bytes).expect("write");
    fs::rename(&staging, path).expect("rename");
}

/// The sha256 of `bytes` in hex, as `qgate plugins --json` reports it (checked against the
/// command's own output below rather than computed here).
fn digest_of(dir: &TempDir, bytes: &[u8]) -> String {
    // `qgate sign` prints the digest it signed; a throwaway key gives it to us without a sha256
    // implementation in the test.
    let key = dir.0.join("digest.key");
    if !key.exists() {
        let output = run(&["keygen", key.to_str().expect("UTF-8")]);
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let file = dir.0.join("digest.wasm");
    fs::write(&file, bytes).expect("write");
    let output = run(&[
        "sign",
        key.to_str().expect("UTF-8"),
        file.to_str().expect("UTF-8"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    text.split("sha256 ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no digest in {text:?}"))
        .to_owned()
}

/// A server running plugin `policy` from `dir/policy.wasm` (first `version-a`), with its admin
/// socket in `dir` and `extra` config appended.
fn start(dir: &TempDir, extra: &str) -> (Server, PathBuf, String) {
    let wasm = dir.0.join("policy.wasm");
    if !wasm.exists() {
        deploy(&wasm, &component("version-a"));
    }
    let socket = dir.0.join("admin.sock");
    // One compiled-code cache for every test: each version is compiled once a run, since a
    // reload compiles at the lowest priority and a debug build of a component takes seconds of
    // whatever CPU the other tests leave.
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache");
    let config = dir.write(
        "qgate.toml",
        &format!(
            "[server]\nplugin_cache_dir = {cache:?}\n\
             [admin]\nsocket = \"admin.sock\"\n{extra}\n[[plugins]]\nname = \"policy\"\n\
             path = \"policy.wasm\"\n"
        ),
    );
    let config = config.to_str().expect("UTF-8").to_owned();
    let server = Server::with_config(&config);
    (server, socket, config)
}

fn admin(args: &[&str], config: &str) -> Output {
    let mut all = args.to_vec();
    all.extend(["--config", config]);
    run(&all)
}

/// The digest `qgate plugins --json` reports for the only plugin.
fn serving(config: &str) -> String {
    let output = admin(&["plugins", "--json"], config);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    text.split("\"digest\": \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no digest in {text}"))
        .to_owned()
}

/// How long a test waits for a swap: a reload compiles at the lowest scheduling priority, so
/// while the other tests keep every core busy it waits for what they leave. Only a failing test
/// waits this long.
const SWAP_PATIENCE: Duration = Duration::from_secs(180);

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + SWAP_PATIENCE;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {SWAP_PATIENCE:?}"
        );
        #[expect(
            clippy::disallowed_methods,
            reason = "a synchronous test polling a child process: no async runtime to block"
        )]
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn admin_commands_list_reload_and_roll_back() {
    let dir = TempDir::new("admin");
    let (mut server, socket, config) = start(&dir, "watch = false");
    let (a, b) = (
        digest_of(&dir, &component("version-a")),
        digest_of(&dir, &component("version-b")),
    );

    let output = admin(&["plugins"], &config);
    assert!(output.status.success(), "{}", stderr(&output));
    let table = stdout(&output);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains(&format!("policy           {}", &a[..12])),
        "{table}"
    );
    for column in ["VERSION", "LOADED (UTC)", "CALLS", "DENIES", "TRAPS"] {
        assert!(table.contains(column), "{table}");
    }

    deploy(&dir.0.join("policy.wasm"), &component("version-b"));
    let output = admin(&["reload", "policy"], &config);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains(&format!("policy: swapped {} -> {}", &a[..12], &b[..12])),
        "{}",
        stdout(&output)
    );
    assert_eq!(serving(&config), b);

    // A reload of every plugin, by socket path: nothing changed.
    let output = run(&["reload", "--admin-socket", socket.to_str().expect("UTF-8")]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("policy: unchanged"),
        "{}",
        stdout(&output)
    );

    let output = admin(&["rollback", "policy"], &config);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(serving(&config), a);
    let output = admin(&["rollback", "policy"], &config);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("no earlier version"),
        "{}",
        stderr(&output)
    );

    // A broken version is refused and the serving one stays.
    deploy(&dir.0.join("policy.wasm"), &component("init-fails"));
    let output = admin(&["reload", "policy"], &config);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("always refuses its config"), "{message}");
    assert!(message.contains("goes on serving"), "{message}");
    assert_eq!(serving(&config), a);

    let output = admin(&["reload", "nobody"], &config);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("no plugin is named \"nobody\""),
        "{}",
        stderr(&output)
    );

    assert!(server.terminate().success());
    assert!(!socket.exists(), "the admin socket outlived the server");
    let output = admin(&["plugins"], &config);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("is the server running"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn the_default_admin_socket_is_private_and_found_from_the_config() {
    let dir = TempDir::new("default-socket");
    let wasm = dir.0.join("policy.wasm");
    deploy(&wasm, &component("version-a"));
    // A free port, for a config that the server and the command both read.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let config = dir.write(
        "qgate.toml",
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[admin]\nwatch = false\n[[plugins]]\n\
             name = \"policy\"\npath = \"policy.wasm\"\n"
        ),
    );
    let config = config.to_str().expect("UTF-8");
    let runtime = dir.0.join("runtime");
    fs::create_dir_all(&runtime).expect("a runtime directory");
    let mut server = super::qgate()
        .env("XDG_RUNTIME_DIR", &runtime)
        .args(["serve", "--config", config])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("qgate serve starts");
    let guard = KillOnDrop(&mut server);
    let socket = runtime.join("qgate").join(format!("admin-{port}.sock"));
    eventually("the default admin socket", || socket.exists());
    let mode = |path: &Path| {
        use std::os::unix::fs::PermissionsExt as _;
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    };
    assert_eq!(mode(&runtime.join("qgate")), 0o700);
    assert_eq!(mode(&socket), 0o600);
    let output = super::qgate()
        .env("XDG_RUNTIME_DIR", &runtime)
        .args(["plugins", "--config", config])
        .output()
        .expect("qgate runs");
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("policy"), "{}", stdout(&output));
    drop(guard);
}

/// Kills a child process when dropped.
struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sighup_and_the_file_watch_reload_a_changed_plugin() {
    let dir = TempDir::new("watch");
    let (mut server, _, config) = start(&dir, "watch = true");
    let (a, b) = (
        digest_of(&dir, &component("version-a")),
        digest_of(&dir, &component("version-b")),
    );
    assert_eq!(serving(&config), a);
    // The watch notices the new file within a couple of seconds.
    deploy(&dir.0.join("policy.wasm"), &component("version-b"));
    eventually("the watch's reload", || serving(&config) == b);
    // A rollback holds: the watch does not load the unchanged file again.
    let output = admin(&["rollback", "policy"], &config);
    assert!(output.status.success(), "{}", stderr(&output));
    #[expect(
        clippy::disallowed_methods,
        reason = "a synchronous test waiting out two polls of the watch: no async runtime"
    )]
    thread::sleep(Duration::from_secs(3));
    assert_eq!(serving(&config), a);
    assert!(server.terminate().success());

    // SIGHUP, without the watch.
    let dir = TempDir::new("hup");
    let (mut server, _, config) = start(&dir, "watch = false");
    deploy(&dir.0.join("policy.wasm"), &component("version-b"));
    let status = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    eventually("SIGHUP's reload", || serving(&config) == b);
    assert!(server.terminate().success());
}

#[test]
fn a_locked_server_runs_only_pinned_or_signed_plugins() {
    let dir = TempDir::new("lock");
    let key = dir.0.join("signing.key");
    let output = run(&["keygen", key.to_str().expect("UTF-8")]);
    assert!(output.status.success(), "{}", stderr(&output));
    let public = fs::read_to_string(dir.0.join("signing.key.pub")).expect("the public key");
    let public = public.trim();
    assert!(stdout(&output).contains(public), "{}", stdout(&output));
    let mode = {
        use std::os::unix::fs::PermissionsExt as _;
        fs::metadata(&key).expect("the key").permissions().mode() & 0o777
    };
    assert_eq!(mode, 0o600);
    // A key is never overwritten.
    assert_eq!(
        run(&["keygen", key.to_str().expect("UTF-8")]).status.code(),
        Some(1)
    );

    let wasm = dir.0.join("policy.wasm");
    deploy(&wasm, &component("version-a"));
    let lock = format!("[lock]\nenabled = true\nkeys = [\"{public}\"]\n");

    // Unsigned: the server refuses to start, naming the plugin.
    let config = dir.write(
        "qgate.toml",
        &format!("{lock}[[plugins]]\nname = \"policy\"\npath = \"policy.wasm\"\n"),
    );
    let output = run(&[
        "serve",
        "--config",
        config.to_str().expect("UTF-8"),
        "-p",
        "127.0.0.1:0",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("refused to load plugin policy"),
        "{message}"
    );
    assert!(message.contains("neither pinned"), "{message}");
    // `qgate check` says the same without starting.
    let output = run(&["check", config.to_str().expect("UTF-8")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("neither pinned"),
        "{}",
        stderr(&output)
    );

    // Signed: it starts. A new unsigned version is refused on swap.
    let output = run(&[
        "sign",
        key.to_str().expect("UTF-8"),
        wasm.to_str().expect("UTF-8"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = run(&["check", config.to_str().expect("UTF-8")]);
    assert!(output.status.success(), "{}", stderr(&output));
    let (mut server, _, config) = start(&dir, &format!("watch = false\n{lock}"));
    let a = digest_of(&dir, &component("version-a"));
    deploy(&wasm, &component("version-b"));
    let output = admin(&["reload", "policy"], &config);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("not a valid signature"),
        "{}",
        stderr(&output)
    );
    assert_eq!(serving(&config), a);
    // Signed with the named key: swapped.
    let output = run(&[
        "sign",
        key.to_str().expect("UTF-8"),
        wasm.to_str().expect("UTF-8"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = admin(&["reload", "policy"], &config);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(server.terminate().success());

    // A pin that does not match: refused at start with both digests.
    let b = digest_of(&dir, &component("version-b"));
    let config = dir.write(
        "pinned.toml",
        &format!(
            "[lock]\nenabled = true\n[[plugins]]\nname = \"policy\"\npath = \"policy.wasm\"\n\
             sha256 = \"{a}\"\n"
        ),
    );
    let output = run(&[
        "serve",
        "--config",
        config.to_str().expect("UTF-8"),
        "-p",
        "127.0.0.1:0",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains(&a) && message.contains(&b), "{message}");
}

/// The digest that `qgate plugins --json` reports for plugin `name`.
fn serving_plugin(config: &str, name: &str) -> String {
    let output = admin(&["plugins", "--json"], config);
    assert!(output.status.success(), "{}", stderr(&output));
    let rows: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    rows.as_array()
        .and_then(|rows| rows.iter().find(|row| row["name"] == name))
        .and_then(|row| row["digest"].as_str())
        .unwrap_or_else(|| panic!("no plugin {name} in {rows}"))
        .to_owned()
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success(), "mkfifo {path:?}");
}

/// A FIFO renamed over a plugin (whose open and read would wait for a writer for ever) or a
/// symlink to `/dev/zero` (which never ends) is refused at once by `qgate reload`, and the file
/// watch goes on seeing the other plugins' changes; at start, `qgate check` and `qgate serve`
/// refuse a FIFO by name instead of waiting on it.
#[test]
fn a_plugin_path_that_is_not_a_regular_file_stalls_nothing() {
    let dir = TempDir::new("fifo");
    for name in ["one", "two"] {
        deploy(&dir.0.join(format!("{name}.wasm")), &component("version-a"));
    }
    // Both start as the same component: with a compilation cache, it is compiled once (a debug
    // build takes seconds a component on a busy machine).
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache");
    let config = dir.write(
        "qgate.toml",
        &format!(
            "[server]\nplugin_cache_dir = {cache:?}\n\
             [admin]\nsocket = \"admin.sock\"\nwatch = true\n\
             [[plugins]]\nname = \"one\"\npath = \"one.wasm\"\n\
             [[plugins]]\nname = \"two\"\npath = \"two.wasm\"\n"
        ),
    );
    let config = config.to_str().expect("UTF-8");
    let mut server = Server::with_config(config);
    let (a, b) = (
        digest_of(&dir, &component("version-a")),
        digest_of(&dir, &component("version-b")),
    );

    let fifo = dir.0.join("fifo");
    mkfifo(&fifo);
    fs::rename(&fifo, dir.0.join("one.wasm")).expect("rename the FIFO over a plugin");
    let output = admin(&["reload", "one"], config);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let message = stderr(&output);
    assert!(
        message.contains("is a FIFO, not a regular file"),
        "{message}"
    );
    assert!(message.contains("goes on serving"), "{message}");
    let output = admin(&["reload"], config);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stdout(&output).contains("one: failed") && stdout(&output).contains("two: unchanged"),
        "{}",
        stdout(&output)
    );

    // The watch still sees the other plugin's new version, with the FIFO in place.
    deploy(&dir.0.join("two.wasm"), &component("version-b"));
    eventually("the watch's reload of `two`", || {
        serving_plugin(config, "two") == b
    });
    assert_eq!(serving_plugin(config, "one"), a);

    fs::remove_file(dir.0.join("one.wasm")).expect("remove the FIFO");
    std::os::unix::fs::symlink("/dev/zero", dir.0.join("one.wasm")).expect("a symlink");
    let output = admin(&["reload", "one"], config);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stderr(&output).contains("is a character device, not a regular file"),
        "{}",
        stderr(&output)
    );
    assert_eq!(serving_plugin(config, "one"), a);
    let status = server.terminate();
    let log = server.stderr();
    assert!(status.success(), "{status}; stderr:\n{log}");
    assert!(
        log.contains("is a FIFO"),
        "the watch logs its refusal:\n{log}"
    );

    // At start: a FIFO is named, not waited on.
    fs::remove_file(dir.0.join("one.wasm")).expect("remove the symlink");
    mkfifo(&dir.0.join("one.wasm"));
    let output = run(&["check", config]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stderr(&output).contains("plugins: failed to read plugin one: ")
            && stderr(&output).contains("is a FIFO, not a regular file"),
        "{}",
        stderr(&output)
    );
    let output = run(&["serve", "--config", config, "-p", "127.0.0.1:0"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(stdout(&output), "", "no listening line");
    assert!(stderr(&output).contains("is a FIFO"), "{}", stderr(&output));
}

/// One line from `reader`, as the admin socket's JSON answer.
fn answer_line(reader: &mut impl std::io::BufRead) -> serde_json::Value {
    let mut line = String::new();
    reader.read_line(&mut line).expect("an answer line");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

/// How many threads process `pid` has now.
fn threads(pid: u32) -> usize {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc");
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|count| count.trim().parse().ok())
        .expect("a Threads line")
}

/// A line too long for a request, or not UTF-8, gets an error answer and the connection goes on;
/// a burst of concurrent reloads waits for a small pool of threads instead of starting one each.
#[test]
fn the_admin_socket_answers_bad_lines_and_bounds_its_threads() {
    use std::{
        io::{BufReader, Write as _},
        os::unix::net::UnixStream,
    };

    let dir = TempDir::new("admin-lines");
    let (mut server, socket, config) = start(&dir, "watch = false");
    let stream = UnixStream::connect(&socket).expect("the admin socket");
    stream.set_read_timeout(Some(PATIENCE)).expect("a timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("a clone"));
    let mut writer = stream;

    // 10 MB on one line, written while this thread reads the answer.
    let long = thread::spawn({
        let mut writer = writer.try_clone().expect("a clone");
        move || {
            writer.write_all(&vec![b'a'; 10 << 20])?;
            writer.write_all(b"\n")
        }
    });
    let answer = answer_line(&mut reader);
    assert_eq!(answer["ok"], false, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.contains("longer than 65536 bytes"), "{answer}");
    long.join()
        .expect("the writer")
        .expect("the whole line was read");

    writer
        .write_all(b"\xff\xfe{\"command\":\"plugins\"}\n")
        .expect("sent");
    let answer = answer_line(&mut reader);
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not UTF-8"),
        "{answer}"
    );
    writer
        .write_all(b"{\"command\":\"plugins\"}\n")
        .expect("sent");
    let answer = answer_line(&mut reader);
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["plugins"][0]["name"], "policy", "{answer}");

    // 300 reloads of every plugin at once.
    let pid = server.child.id();
    let before = threads(pid);
    let clients = (0..300)
        .map(|_| {
            let mut client = UnixStream::connect(&socket).expect("the admin socket");
            client.set_read_timeout(Some(PATIENCE)).expect("a timeout");
            client
                .write_all(b"{\"command\":\"reload\"}\n")
                .expect("sent");
            client
        })
        .collect::<Vec<_>>();
    let mut most = before;
    for client in clients {
        most = most.max(threads(pid));
        let answer = answer_line(&mut BufReader::new(client));
        assert_eq!(answer["ok"], true, "{answer}");
    }
    // The admin socket's two threads were there before; each job adds a thread that reads the
    // plugin's file, and the one before it may not have ended yet.
    assert!(
        most <= before + 4,
        "{most} threads during the reloads, {before} before"
    );
    assert_eq!(serving(&config), digest_of(&dir, &component("version-a")));
    assert!(server.terminate().success());
}

/// The names `qgate plugins --json` lists, in chain order.
fn chain(config: &str) -> Vec<String> {
    let output = admin(&["plugins", "--json"], config);
    assert!(output.status.success(), "{}", stderr(&output));
    let rows: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    rows.as_array()
        .expect("rows")
        .iter()
        .map(|row| row["name"].as_str().expect("a name").to_owned())
        .collect()
}

/// What the query `version` gets over a new connection.
fn version(server: &Server) -> String {
    let mut stream = std::net::TcpStream::connect(server.addr).expect("the server accepts");
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("a read timeout");
    std::io::Write::write_all(&mut stream, b"alice:x\x03\x00").expect("a handshake");
    let mut capability = [0_u8; 1];
    std::io::Read::read_exact(&mut stream, &mut capability).expect("a login");
    super::query(&mut stream, "version")
}

#[test]
fn a_config_reload_changes_the_chain_and_names_what_needs_a_restart() {
    let dir = TempDir::new("reconfig");
    let (mut server, _, config) = start(&dir, "watch = true");
    deploy(&dir.0.join("second.wasm"), &component("version-b"));
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache");
    let write = |limits: &str, plugins: &[&str]| {
        let tables = plugins
            .iter()
            .map(|name| format!("[[plugins]]\nname = \"{name}\"\npath = \"{name}.wasm\"\n"))
            .collect::<String>();
        dir.write(
            "qgate.toml",
            &format!(
                "[server]\nplugin_cache_dir = {cache:?}\n[admin]\nsocket = \"admin.sock\"\n\
                 watch = true\n{limits}\n{tables}"
            ),
        );
    };
    assert_eq!(version(&server), "`a");

    // A plugin added in front, a limit that applies at once, and a log level that waits for a
    // restart.
    write(
        "[limits]\nmax_connections = 100\n[log]\nlevel = \"debug\"",
        &["second", "policy"],
    );
    let output = admin(&["reload"], &config);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("read again: added second; applied limits.max_connections\n"),
        "{text}"
    );
    assert!(
        text.contains("applied only when qgate restarts: [log]"),
        "{text}"
    );
    assert_eq!(chain(&config), ["second", "policy"]);
    assert_eq!(version(&server), "`b");

    // The file watch follows the new plugin's file.
    let before = serving_plugin(&config, "second");
    deploy(&dir.0.join("second.wasm"), &component("version-a"));
    eventually("the watch's reload of an added plugin", || {
        serving_plugin(&config, "second") != before
    });
    assert_eq!(version(&server), "`a");

    // A config that does not parse, and one whose plugin does not load: nothing changes.
    dir.write("qgate.toml", "[[plugins]\n");
    let output = admin(&["reload"], &config);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("the server was not asked"),
        "{output:?}"
    );
    let socket = dir.0.join("admin.sock");
    let output = run(&["reload", "--admin-socket", socket.to_str().expect("UTF-8")]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("not valid TOML") && message.contains("not reloaded, nothing changed"),
        "{message}"
    );
    write("", &["missing", "policy"]);
    let output = admin(&["reload"], &config);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("missing.wasm") && message.contains("nothing changed"),
        "{message}"
    );
    assert_eq!(chain(&config), ["second", "policy"]);

    // A password file, applied to the next login.
    dir.write("users.txt", "bob:pw\n");
    write(
        "[auth]\npassword_file = \"users.txt\"",
        &["second", "policy"],
    );
    let output = admin(&["reload"], &config);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("applied limits.max_connections, auth.password_file"),
        "{}",
        stdout(&output)
    );
    assert_eq!(super::handshake(server.addr, b"alice:x\x03\x00"), None);
    assert_eq!(super::handshake(server.addr, b"bob:pw\x03\x00"), Some(3));

    // SIGHUP reads it again too: `second` removed, and the password file with it.
    write("", &["policy"]);
    let status = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    eventually("SIGHUP's config reload", || chain(&config) == ["policy"]);
    assert_eq!(version(&server), "`a");
    assert!(server.terminate().success());
    let log = server.stderr();
    assert!(log.contains("plugin chain replaced"), "{log}");
    assert!(log.contains("not reloaded, nothing changed"), "{log}");
}
