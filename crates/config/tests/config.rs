//! The config crate's API tests: UI snapshots of the errors, the reference config, the defaults.
//!
//! Each `tests/ui/NAME.toml` is loaded and the error it gives is compared with `tests/ui/NAME.err`.
//! After changing a message on purpose, rewrite the snapshots with
//! `UPDATE_UI=1 cargo test -p qgate-config` and review the diff.

use std::{
    env, fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use qgate_config::{ClientAuth, Config, ConfigError, LogFormat, TlsMode, UserFrom};

/// Every `tests/ui/*.toml` gives exactly the error in its `.err` file.
#[test]
fn ui() {
    let update = env::var_os("UPDATE_UI").is_some_and(|value| value == "1");
    let dir = Path::new("tests/ui");
    let mut cases: Vec<PathBuf> = fs::read_dir(dir)
        .expect("tests/ui exists")
        .map(|entry| entry.expect("tests/ui is readable").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no UI cases in {}", dir.display());
    let mut failures = Vec::new();
    for case in &cases {
        let actual = match Config::load(case) {
            Ok(config) => format!("unexpectedly valid: {config:?}\n"),
            Err(error) => format!("{error}\n"),
        };
        let snapshot = case.with_extension("err");
        if update {
            fs::write(&snapshot, &actual).expect("the snapshot is writable");
            continue;
        }
        let expected = fs::read_to_string(&snapshot).unwrap_or_default();
        if actual != expected {
            failures.push(format!(
                "{}:\n  expected: {}  actual:   {}",
                case.display(),
                expected,
                actual
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "UI snapshots differ (rerun with UPDATE_UI=1 to accept the new output):\n{}",
        failures.join("\n")
    );
}

/// The reference `config.toml` at the repository root parses, spells out the built-in defaults of
/// [server], [limits] and [log], and sets up the walkthrough: its password file and its chain.
#[test]
fn reference_config_is_the_walkthrough() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let config = Config::load(dir.join("config.toml")).unwrap_or_else(|error| panic!("{error}"));
    let defaults = Config::default();
    assert_eq!(config.server, defaults.server);
    assert_eq!(config.limits, defaults.limits);
    assert_eq!(config.log, defaults.log);
    assert_eq!(config.tls, defaults.tls);
    assert_eq!(config.admin, defaults.admin);
    assert_eq!(config.lock, defaults.lock);
    assert_eq!(config.metrics, None, "metrics are off unless asked for");
    assert_eq!(config.auth.password_file, Some(dir.join("passwords.txt")));
    assert!(!config.auth.restricted);
    assert_eq!(
        config.auth.failed_login_delay,
        defaults.auth.failed_login_delay
    );
    assert_eq!(
        config.auth.max_failed_login_delay,
        defaults.auth.max_failed_login_delay
    );
    assert_eq!(
        config.auth.failures_before_delay,
        defaults.auth.failures_before_delay
    );
    let names: Vec<&str> = config
        .plugins
        .as_slice()
        .iter()
        .map(|plugin| plugin.name.as_str())
        .collect();
    assert_eq!(names, ["conns", "audit", "allowlist", "demo-api"]);
    for plugin in config.plugins.as_slice() {
        assert!(
            !plugin.fail_open,
            "{}: the walkthrough is fail-closed",
            plugin.name
        );
        assert_eq!(
            plugin.time_budget.get(),
            qgate_config::Plugin::DEFAULT_TIME_BUDGET
        );
        assert!(
            plugin.path.starts_with(&dir),
            "{}: resolved against the file",
            plugin.name
        );
    }
}

/// A plugin entry with only its name and path takes the defaults, and its `config` table is kept
/// as written.
#[test]
fn plugin_defaults() {
    let config = Config::from_toml_str(
        "[[plugins]]\nname = \"a\"\npath = \"a.wasm\"\n\n[[plugins]]\nname = \"b\"\npath = \"b.wasm\"\nconfig = { k = [1, 2] }\n",
    )
    .expect("valid");
    let [a, b] = config.plugins.as_slice() else {
        panic!("two plugins")
    };
    assert_eq!(a.name, "a");
    assert!(!a.fail_open);
    assert_eq!(a.time_budget.get(), Duration::from_millis(100));
    assert_eq!(a.memory_limit.get(), 64 << 20);
    assert_eq!(a.max_file_bytes.get(), 64 << 20);
    assert!(a.config.is_empty());
    assert_eq!(b.config["k"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        serde_json::Value::Object(b.config_json()).to_string(),
        r#"{"k":[1,2]}"#
    );
    assert_eq!(config.server.plugin_cache_dir, None);
}

#[test]
fn empty_file_is_the_defaults() {
    let config = Config::from_toml_str("").expect("an empty config is valid");
    assert_eq!(config, Config::default());
    let listen: SocketAddr = "127.0.0.1:5000".parse().expect("an address");
    assert_eq!(config.server.listen.get(), listen);
    assert_eq!(config.server.shutdown_grace.get(), Duration::from_secs(10));
    assert_eq!(config.auth.password_file, None);
    assert!(!config.auth.restricted);
    assert_eq!(config.limits.max_message_bytes.get(), 256 << 20);
    assert_eq!(config.limits.max_handshake_bytes.get(), 64 << 10);
    assert_eq!(
        config.limits.handshake_timeout.get(),
        Duration::from_secs(10)
    );
    assert_eq!(config.limits.idle_timeout.get(), None);
    assert_eq!(config.limits.max_connections.get(), 10_000);
    assert_eq!(config.limits.max_connections_per_user.get(), 1_000);
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.log.level, "info");
}

#[test]
fn every_key() {
    let config = Config::from_toml_str(
        r#"
        [server]
        listen = 5001
        shutdown_grace = "0s"
        connection_threads = 4
        [auth]
        password_file = "/etc/qgate/passwords.txt"
        restricted = true
        [limits]
        max_message_bytes = 1048576
        max_handshake_bytes = "1KiB"
        handshake_timeout = "500ms"
        idle_timeout = "1h30m"
        max_connections = 10
        max_connections_per_user = 2
        [tls]
        mode = "required"
        cert_file = "/etc/qgate/fullchain.pem"
        key_file = "/etc/qgate/privkey.pem"
        ca_file = "/etc/qgate/clients.pem"
        client_auth = "optional"
        user_from = "san"
        [log]
        format = "json"
        level = "debug"
        [admin]
        enabled = false
        watch = false
        socket = "/run/qgate/admin.sock"
        [lock]
        enabled = true
        keys = ["Pp6cZ0Zy0r2xW5m0dB1Q3o7iN9lQ2T1kY6mVbq8XyZ4="]
        [metrics]
        listen = "127.0.0.1:9464"
        [decision_log]
        path = "-"
        max_file_bytes = "1MiB"
        max_files = 2
        include_text = false
        include_bytes = "4KiB"
        [[plugins]]
        name = "policy"
        path = "policy.wasm"
        sha256 = "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"
        "#,
    )
    .expect("a valid config");
    let log = config.decision_log.clone().expect("[decision_log]");
    assert_eq!(log.path, Path::new("-"));
    assert_eq!(
        (log.max_file_bytes.get(), log.max_files.get()),
        (1 << 20, 2)
    );
    assert!(!log.include_text);
    assert_eq!(log.include_bytes.get(), 4096);
    // The defaults: text kept, bytes not.
    let log = Config::from_toml_str("[decision_log]\npath = \"d.jsonl\"\n")
        .expect("a valid config")
        .decision_log
        .expect("[decision_log]");
    assert_eq!(
        (
            log.max_file_bytes.get(),
            log.max_files.get(),
            log.include_text,
            log.include_bytes.get()
        ),
        (64 << 20, 4, true, 0)
    );
    assert!(Config::from_toml_str("[decision_log]\ninclude_text = true\n").is_err());
    assert_eq!(
        config.metrics.map(|metrics| metrics.listen.get()),
        Some("127.0.0.1:9464".parse().expect("an address"))
    );
    assert_eq!(config.tls.mode, TlsMode::Required);
    assert_eq!(
        config.tls.cert_file.as_deref(),
        Some(Path::new("/etc/qgate/fullchain.pem"))
    );
    assert_eq!(
        config.tls.key_file.as_deref(),
        Some(Path::new("/etc/qgate/privkey.pem"))
    );
    assert_eq!(
        config.tls.ca_file.as_deref(),
        Some(Path::new("/etc/qgate/clients.pem"))
    );
    assert_eq!(config.tls.client_auth, Some(ClientAuth::Optional));
    assert_eq!(config.tls.user_from, UserFrom::San);
    let listen: SocketAddr = "0.0.0.0:5001".parse().expect("an address");
    assert_eq!(config.server.listen.get(), listen);
    assert_eq!(config.server.shutdown_grace.get(), Duration::ZERO);
    assert_eq!(config.server.connection_threads, 4);
    assert_eq!(
        config.auth.password_file.as_deref(),
        Some(Path::new("/etc/qgate/passwords.txt"))
    );
    assert!(config.auth.restricted);
    assert_eq!(config.limits.max_message_bytes.get(), 1 << 20);
    assert_eq!(config.limits.max_handshake_bytes.get(), 1 << 10);
    assert_eq!(
        config.limits.handshake_timeout.get(),
        Duration::from_millis(500)
    );
    assert_eq!(
        config.limits.idle_timeout.get(),
        Some(Duration::from_secs(5400))
    );
    assert_eq!(config.limits.max_connections.get(), 10);
    assert_eq!(config.limits.max_connections_per_user.get(), 2);
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.log.level, "debug");
    assert!(!config.admin.enabled);
    assert!(!config.admin.watch);
    assert_eq!(
        config.admin.socket.as_deref(),
        Some(Path::new("/run/qgate/admin.sock"))
    );
    assert!(config.lock.enabled);
    assert_eq!(config.lock.keys.len(), 1);
    assert_eq!(
        config.plugins.as_slice()[0]
            .sha256
            .as_ref()
            .map(|pin| pin.as_hex()),
        Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    );
}

/// A relative password file is found next to the config file that names it, not in the current
/// directory.
/// `[tls.acme]`'s storage and CA bundle are resolved against the config file's directory, and the
/// resolved `[tls]` loads the certificate and key from the storage.
#[test]
fn acme_paths_are_relative_to_the_config() {
    let dir = env::temp_dir().join(format!("qgate-config-acme-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("a temporary directory");
    let path = dir.join("qgate.toml");
    fs::write(
        &path,
        "[tls]\nmode = \"required\"\n[tls.acme]\ndomains = [\"q.example.com\"]\n\
         storage = \"acme\"\ndirectory_ca_file = \"ca.pem\"\n",
    )
    .expect("write");
    let loaded = Config::load(&path);
    fs::remove_dir_all(&dir).expect("the temporary directory is removed");
    let config = loaded.unwrap_or_else(|error| panic!("{error}"));
    let acme = config.tls.acme.as_ref().expect("[tls.acme]");
    assert_eq!(acme.storage, dir.join("acme"));
    assert_eq!(acme.directory_ca_file, Some(dir.join("ca.pem")));
    let tls = config
        .tls
        .resolve(|_| None)
        .expect("valid")
        .expect("TLS is on");
    assert_eq!(tls.cert_file, dir.join("acme/cert.pem"));
    assert_eq!(tls.key_file, dir.join("acme/key.pem"));
}

#[test]
fn password_file_is_relative_to_the_config() {
    let dir = env::temp_dir().join(format!("qgate-config-test-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("a temporary directory");
    let path = dir.join("qgate.toml");
    fs::write(
        &path,
        "[auth]\npassword_file = \"passwords.txt\"\n[tls]\ncert_file = \"tls/chain.pem\"\n\
         key_file = \"/abs/key.pem\"\nca_file = \"ca.pem\"\n",
    )
    .expect("a config file");
    let loaded = Config::load(&path);
    fs::remove_dir_all(&dir).expect("the temporary directory is removed");
    let config = loaded.unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.auth.password_file, Some(dir.join("passwords.txt")));
    assert_eq!(config.tls.cert_file, Some(dir.join("tls/chain.pem")));
    assert_eq!(config.tls.key_file, Some(PathBuf::from("/abs/key.pem")));
    assert_eq!(config.tls.ca_file, Some(dir.join("ca.pem")));
    // From text, there is no file to be relative to.
    let config = Config::from_toml_str("[auth]\npassword_file = \"passwords.txt\"\n")
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        config.auth.password_file.as_deref(),
        Some(Path::new("passwords.txt"))
    );
}

/// A `{ file = "PATH" }` value of a plugin's config is a file for the host to read: listed with
/// its key, its JSON pointer and its pin, at any depth and in arrays, relative to the config.
#[test]
fn plugin_config_files_are_listed_and_relative_to_the_config() {
    let dir = env::temp_dir().join(format!("qgate-config-files-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("a temporary directory");
    let path = dir.join("qgate.toml");
    let pin = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";
    fs::write(
        &path,
        format!(
            "[[plugins]]\nname = \"cedar\"\npath = \"cedar.wasm\"\n\
             [plugins.config]\nlimit = 3\npolicies = [{{ file = \"policy/a.cedar\" }}, \
             {{ file = \"/abs/b.cedar\", sha256 = \"{pin}\" }}]\n\
             entities = {{ file = \"policy/entities.json\" }}\n\
             [plugins.config.nested]\n\"a/b\" = {{ file = \"n.txt\" }}\n"
        ),
    )
    .expect("a config file");
    let loaded = Config::load(&path);
    fs::remove_dir_all(&dir).expect("the temporary directory is removed");
    let config = loaded.unwrap_or_else(|error| panic!("{error}"));
    let plugin = &config.plugins.as_slice()[0];
    let files = plugin
        .config_files()
        .unwrap_or_else(|error| panic!("{error}"));
    let listed: Vec<_> = files
        .iter()
        .map(|file| {
            (
                file.key.as_str(),
                file.pointer.as_str(),
                file.path.clone(),
                file.sha256.as_ref().map(|pin| pin.as_hex().to_owned()),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (
                "entities",
                "/entities",
                dir.join("policy/entities.json"),
                None
            ),
            ("nested.a/b", "/nested/a~1b", dir.join("n.txt"), None),
            (
                "policies[0]",
                "/policies/0",
                dir.join("policy/a.cedar"),
                None
            ),
            (
                "policies[1]",
                "/policies/1",
                PathBuf::from("/abs/b.cedar"),
                Some(pin.to_ascii_lowercase())
            ),
        ]
    );
    // Other values are left alone.
    assert_eq!(plugin.config_json()["limit"], 3);
}

/// A table with a `file` key must be a file reference and nothing else.
#[test]
fn a_file_value_takes_only_file_and_sha256() {
    for (config, error) in [
        (
            "x = { file = 3 }",
            "x: a file is written { file = \"PATH\" }, with the path as text",
        ),
        (
            "x = { file = \"a\", mode = \"r\" }",
            "x: `mode` beside `file`: a table with a `file` key is a file the host reads for the \
             plugin, and takes only `file` and `sha256`",
        ),
        (
            "x = [{ file = \"a\", sha256 = \"abc\" }]",
            "x[0]: sha256: invalid sha256 \"abc\"",
        ),
    ] {
        let text =
            format!("[[plugins]]\nname = \"p\"\npath = \"p.wasm\"\n[plugins.config]\n{config}\n");
        let message = Config::from_toml_str(&text)
            .expect_err("not a file reference")
            .to_string();
        assert!(
            message.contains(&format!("plugin `p`: config: {error}")),
            "{config}: {message}"
        );
    }
}

#[test]
fn errors_carry_the_key_and_position() {
    let error = Config::from_toml_str("[limits]\nmax_connections = \"x\"\n")
        .expect_err("a string is not a count");
    assert_eq!(error.key(), Some("limits.max_connections"));
    let ConfigError::Invalid {
        file, line, column, ..
    } = &error
    else {
        panic!("expected ConfigError::Invalid, got {error:?}");
    };
    assert_eq!((file, *line, *column), (&None, Some(2), Some(19)));
    assert_eq!(
        error.to_string(),
        "limits.max_connections: invalid type: string \"x\", expected a positive integer \
         (line 2, column 19)"
    );
}

#[test]
fn connection_threads_are_bounded() {
    assert_eq!(Config::default().server.connection_threads, 0);
    let error = Config::from_toml_str("[server]\nconnection_threads = 100000\n")
        .expect_err("a hundred thousand threads");
    assert!(
        error
            .to_string()
            .contains("`connection_threads` of 100000 is more than 1024"),
        "{error}"
    );
}

#[test]
fn missing_file() {
    let error = Config::load("tests/ui/does-not-exist.toml").expect_err("no such file");
    let ConfigError::Read { source, .. } = &error else {
        panic!("expected ConfigError::Read, got {error:?}");
    };
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    assert_eq!(
        error.to_string(),
        "tests/ui/does-not-exist.toml: cannot read"
    );
    assert!(std::error::Error::source(&error).is_some(), "{error:?}");
}
