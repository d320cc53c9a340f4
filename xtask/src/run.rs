//! `cargo xtask run [--gateway] [ARGS...]`: builds the plugins and qgate in release mode and serves
//! the reference config, the message-handlers walkthrough, on 127.0.0.1:5000.
//!
//! It is `cargo xtask plugins` (the components config.toml names), then `cargo run --release -p
//! qgate -- serve --config config.toml ARGS...` from the repository root, so extra arguments go to
//! `qgate serve` and override the file (`-p 6000`, `-U passwords.txt`, `--log-json`). The server
//! runs in the foreground until Ctrl-C.
//!
//! With `--gateway`, the walkthrough runs in gateway mode, as qgate runs in front of kdb+: a
//! second qgate serving only the `demo-api` plugin on 127.0.0.1:5001 stands in for kdb+, and the
//! qgate on 5000 runs the walkthrough's chain without `demo-api`, with that second qgate as its
//! `[[upstream]]`. What the chain passes is forwarded to it, and its answers come back as bytes.
//! Both configs are written under `target/xtask-run/` from `config.toml`, so that the two modes
//! never disagree about the chain.
//!
//! ```text
//!   client ──► qgate :5000 (conns, audit, allowlist) ──► qgate :5001 (demo-api)
//! ```

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, ExitCode, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{cargo, plugins, project_root};

/// The plugin that plays the upstream kdb+ in `--gateway` mode.
const UPSTREAM_PLUGIN: &str = "demo-api";

/// Where the stand-in upstream listens in `--gateway` mode: the port after the walkthrough's.
const UPSTREAM_LISTEN: &str = "127.0.0.1:5001";

/// Runs the server, and exits with its exit status.
pub(crate) fn run(args: &[String]) -> ExitCode {
    let (gateway, args) = match args.split_first() {
        Some((first, rest)) if first == "--gateway" => (true, rest),
        _ => (false, args),
    };
    eprintln!("==> cargo xtask plugins");
    if let Err(error) = plugins::run(&[]) {
        eprintln!("xtask run: error: building the plugins failed: {error:#}");
        return ExitCode::FAILURE;
    }
    let result = if gateway {
        run_gateway(args)
    } else {
        let mut command = cargo();
        command
            .args(["run", "--release", "--package", "qgate", "--"])
            .args(["serve", "--config", "config.toml"])
            .args(args);
        eprintln!(
            "==> cargo run --release -p qgate -- serve --config config.toml {}",
            args.join(" ")
        );
        command
            .status()
            .context("failed to start `cargo run`")
            .map(|status| status.code())
    };
    match result {
        // Ctrl-C reaches qgate and cargo alike; qgate exits 0 after draining, and so does this.
        Ok(code) => code
            .and_then(|code| u8::try_from(code).ok())
            .map_or(ExitCode::FAILURE, ExitCode::from),
        Err(error) => {
            eprintln!("xtask run: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The walkthrough in gateway mode: the stand-in upstream in the background, the gateway in the
/// foreground; the upstream is stopped when the gateway exits.
fn run_gateway(args: &[String]) -> Result<Option<i32>> {
    let root = project_root();
    eprintln!("==> cargo build --release -p qgate");
    let status = cargo()
        .args(["build", "--release", "--package", "qgate"])
        .status()
        .context("failed to start `cargo build`")?;
    if !status.success() {
        bail!("building qgate failed: {status}");
    }
    let qgate = root.join("target/release/qgate");
    let dir = root.join("target/xtask-run");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let reference =
        fs::read_to_string(root.join("config.toml")).context("cannot read config.toml")?;
    let (front, upstream) = gateway_configs(&reference, &root)?;
    let front_path = dir.join("gateway.toml");
    let upstream_path = dir.join("upstream.toml");
    fs::write(&front_path, front).context("cannot write the gateway's config")?;
    fs::write(&upstream_path, upstream).context("cannot write the upstream's config")?;

    eprintln!(
        "==> qgate serve --config {} (the stand-in for kdb+, in the background)",
        upstream_path.display()
    );
    let mut upstream = Command::new(&qgate)
        .args(["serve", "--config"])
        .arg(&upstream_path)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", qgate.display()))?;
    let started = wait_listening(&mut upstream);
    let result = started.and_then(|()| {
        eprintln!(
            "==> qgate serve --config {} {}",
            front_path.display(),
            args.join(" ")
        );
        Command::new(&qgate)
            .args(["serve", "--config"])
            .arg(&front_path)
            .args(args)
            .status()
            .with_context(|| format!("cannot start {}", qgate.display()))
            .map(|status| status.code())
    });
    // Ctrl-C reached it too; otherwise the gateway failed and the upstream is stopped here.
    let _ = upstream.kill();
    let _ = upstream.wait();
    result
}

/// Waits for the child's `qgate listening on ADDR` line; an error if it exits first.
fn wait_listening(child: &mut Child) -> Result<()> {
    let Some(stdout) = child.stdout.take() else {
        bail!("the upstream's stdout is not piped");
    };
    let mut lines = BufReader::new(stdout).lines();
    match lines.next() {
        Some(Ok(line)) if line.starts_with("qgate listening on ") => {
            eprintln!("    {line}");
            // The rest of its stdout is drained on a thread, so that it never blocks on a pipe.
            std::thread::spawn(move || lines.for_each(drop));
            Ok(())
        }
        _ => bail!(
            "the stand-in upstream did not start (its log is above); is {UPSTREAM_LISTEN} in use?"
        ),
    }
}

/// The two configs of `--gateway` mode, from the reference `config.toml` text: the gateway's
/// (the reference without the upstream's plugin, with an `[[upstream]]`) and the upstream's (that
/// plugin alone, no password file). Relative paths become absolute, since the files are written
/// elsewhere.
fn gateway_configs(reference: &str, root: &Path) -> Result<(String, String)> {
    let mut front: toml::Table = reference.parse().context("config.toml is not TOML")?;
    let absolute = |value: &mut toml::Value| {
        if let Some(path) = value.as_str() {
            *value = toml::Value::String(root.join(path).display().to_string());
        }
    };
    if let Some(file) = front
        .get_mut("auth")
        .and_then(|auth| auth.get_mut("password_file"))
    {
        absolute(file);
    }
    let Some(toml::Value::Array(plugins)) = front.get_mut("plugins") else {
        bail!("config.toml has no [[plugins]]");
    };
    for plugin in plugins.iter_mut() {
        if let Some(path) = plugin.get_mut("path") {
            absolute(path);
        }
    }
    let position = plugins
        .iter()
        .position(|plugin| {
            plugin.get("name").and_then(toml::Value::as_str) == Some(UPSTREAM_PLUGIN)
        })
        .with_context(|| format!("config.toml has no plugin named {UPSTREAM_PLUGIN}"))?;
    let backend = plugins.remove(position);

    let mut upstream_entry = toml::Table::new();
    upstream_entry.insert("name".into(), "walkthrough".into());
    upstream_entry.insert(
        "servers".into(),
        toml::Value::Array(vec![UPSTREAM_LISTEN.into()]),
    );
    front.insert(
        "upstream".into(),
        toml::Value::Array(vec![toml::Value::Table(upstream_entry)]),
    );

    let mut upstream = toml::Table::new();
    let mut server = toml::Table::new();
    server.insert("listen".into(), UPSTREAM_LISTEN.into());
    upstream.insert("server".into(), toml::Value::Table(server));
    upstream.insert("plugins".into(), toml::Value::Array(vec![backend]));

    let header =
        "# Written by `cargo xtask run --gateway` from config.toml; edits are overwritten.\n";
    Ok((
        format!("{header}{}", toml::to_string(&front)?),
        format!("{header}{}", toml::to_string(&upstream)?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_configs_split_the_walkthrough_at_its_backend() {
        let root = project_root();
        let reference = fs::read_to_string(root.join("config.toml")).expect("config.toml");
        let (front, upstream) = gateway_configs(&reference, &root).expect("the configs");
        let front: toml::Table = front.parse().expect("the gateway's config is TOML");
        let upstream: toml::Table = upstream.parse().expect("the upstream's config is TOML");
        let names = |config: &toml::Table| {
            config["plugins"]
                .as_array()
                .expect("plugins")
                .iter()
                .map(|plugin| plugin["name"].as_str().expect("a name").to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&front), ["conns", "audit", "allowlist"]);
        assert_eq!(names(&upstream), [UPSTREAM_PLUGIN]);
        assert_eq!(
            front["upstream"][0]["servers"][0].as_str(),
            Some(UPSTREAM_LISTEN)
        );
        assert_eq!(upstream["server"]["listen"].as_str(), Some(UPSTREAM_LISTEN));
        let password_file = front["auth"]["password_file"].as_str().expect("a path");
        assert!(Path::new(password_file).is_absolute(), "{password_file}");
        assert!(Path::new(password_file).exists(), "{password_file}");
        // The allowlist keeps its walkthrough config.
        assert!(
            front["plugins"][2]["config"]["users"]
                .get("admin")
                .is_some()
        );
    }
}
