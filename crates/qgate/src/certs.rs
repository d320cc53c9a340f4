//! `qgate certs`: certificates for trying TLS and mutual TLS, made with rcgen.
//!
//! It writes a development CA, an intermediate signed by it, a server certificate signed by the
//! intermediate (for `localhost`, `127.0.0.1`, `::1` and any `--name`), and one client certificate
//! per `--client`, signed by the CA. The server's file holds its certificate and then the
//! intermediate, as a real chain does, so a client that trusts only `ca.pem` can verify it.
//! Keys are written readable by their owner only (`0600`), as `qgate serve` insists.
//!
//! Run again on the same directory, it keeps the CA and the intermediate it finds there (and the
//! server certificate, unless `--name` asks for a new one), and adds the client certificates asked
//! for, so that new clients can be issued without replacing what servers and clients already trust.
//! `--force` makes everything anew.
//!
//! These are for development and tests: the CA's key sits next to its certificate.

use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// `qgate certs`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The directory to write to; made if missing.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// A host name or IP address for the server certificate, besides localhost, 127.0.0.1 and ::1
    /// (repeatable).
    #[arg(long = "name", value_name = "HOST")]
    names: Vec<String>,
    /// A client certificate for mutual TLS with this common name (repeatable): written as
    /// client-NAME.pem and client-NAME.key.
    #[arg(long = "client", value_name = "NAME")]
    clients: Vec<String>,
    /// How long the server and client certificates are valid, in days (the CA and the
    /// intermediate: ten times as long).
    #[arg(long, value_name = "DAYS", default_value_t = 365)]
    days: u32,
    /// Make everything anew, a new CA included, overwriting the files that exist.
    #[arg(long)]
    force: bool,
}

/// One certificate authority: what signs the certificates below it.
struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Authority {
    /// The CA whose certificate and key are `NAME.pem` and `NAME.key` in `dir`.
    fn read(dir: &Path, name: &str) -> Result<Self> {
        let read = |file: String| {
            let path = dir.join(file);
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
        };
        let pem = read(format!("{name}.pem"))?;
        let key = KeyPair::from_pem(&read(format!("{name}.key"))?)
            .with_context(|| format!("{name}.key in {} is not a usable key", dir.display()))?;
        let issuer = Issuer::from_ca_cert_pem(&pem, key)
            .with_context(|| format!("{name}.pem in {} is not a CA certificate", dir.display()))?;
        Ok(Self { issuer, pem })
    }
}

/// Writes the certificates and prints what was written and how to use it.
///
/// # Errors
///
/// If a name is not a valid DNS name or IP address, a file exists (without `--force`), or a file
/// cannot be written.
pub(crate) fn run(args: &Args) -> Result<()> {
    for client in &args.clients {
        if client.is_empty()
            || !client
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
        {
            bail!(
                "--client {client:?}: use letters, digits and - _ . @ only (the name is part of a \
                 file name)"
            );
        }
    }
    fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let out = Output {
        dir: &args.out,
        force: args.force,
    };
    let now = time::OffsetDateTime::now_utc();
    let leaf_days = time::Duration::days(i64::from(args.days.max(1)));
    let ca_days = leaf_days * 10;
    // A day's slack for clocks that are behind.
    let not_before = now - time::Duration::days(1);

    let reuse = !args.force && args.out.join("ca.pem").exists();
    let mut written = Vec::new();
    let mut kept = Vec::new();
    let (root, intermediate) = if reuse {
        kept.extend(["ca.pem", "intermediate.pem"].map(|name| args.out.join(name)));
        (
            Authority::read(&args.out, "ca")?,
            Authority::read(&args.out, "intermediate")?,
        )
    } else {
        let (root, root_key) = authority("qgate development CA", None, not_before, now + ca_days)?;
        let (intermediate, intermediate_key) = authority(
            "qgate development intermediate",
            Some(&root),
            not_before,
            now + ca_days,
        )?;
        written.extend([
            out.write("ca.pem", &root.pem, false)?,
            out.write("ca.key", &root_key, true)?,
            out.write("intermediate.pem", &intermediate.pem, false)?,
            out.write("intermediate.key", &intermediate_key, true)?,
        ]);
        (root, intermediate)
    };

    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(args.names.iter().cloned());
    if reuse && args.names.is_empty() && args.out.join("server.pem").exists() {
        kept.push(args.out.join("server.pem"));
    } else {
        let (server, server_key) = leaf(
            &intermediate,
            names.first().map_or("localhost", String::as_str),
            names.clone(),
            ExtendedKeyUsagePurpose::ServerAuth,
            (not_before, now + leaf_days),
        )
        .context(
            "cannot make the server certificate (is every --name a host name or IP address?)",
        )?;
        // A new server certificate from the same CA replaces the old one.
        let out = Output { force: true, ..out };
        written.push(out.write(
            "server.pem",
            &format!("{server}{}", intermediate.pem),
            false,
        )?);
        written.push(out.write("server.key", &server_key, true)?);
    }

    for client in &args.clients {
        let (cert, key) = leaf(
            &root,
            client,
            vec![client.clone()],
            ExtendedKeyUsagePurpose::ClientAuth,
            (not_before, now + leaf_days),
        )
        .with_context(|| format!("cannot make the client certificate for {client:?}"))?;
        written.push(out.write(&format!("client-{client}.pem"), &cert, false)?);
        written.push(out.write(&format!("client-{client}.key"), &key, true)?);
    }

    report(args, &written, &kept).context("cannot write to stdout")
}

/// A CA certificate: self-signed when `parent` is `None`, else signed by it (and allowed no CA
/// below itself). Returns it and its key's PEM.
fn authority(
    name: &str,
    parent: Option<&Authority>,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> Result<(Authority, String)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(match parent {
        None => BasicConstraints::Unconstrained,
        Some(_) => BasicConstraints::Constrained(0),
    });
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = not_before;
    params.not_after = not_after;
    let key = KeyPair::generate()?;
    let cert = match parent {
        None => params.self_signed(&key)?,
        Some(parent) => params.signed_by(&key, &parent.issuer)?,
    };
    let key_pem = key.serialize_pem();
    Ok((
        Authority {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        },
        key_pem,
    ))
}

/// A leaf certificate for `sans`, with `cn` as its subject's common name: `(cert PEM, key PEM)`.
fn leaf(
    issuer: &Authority,
    cn: &str,
    sans: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
    (not_before, not_after): (time::OffsetDateTime, time::OffsetDateTime),
) -> Result<(String, String)> {
    let mut params = CertificateParams::new(sans)?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.not_before = not_before;
    params.not_after = not_after;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer.issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Where the files go.
#[derive(Clone, Copy)]
struct Output<'a> {
    dir: &'a Path,
    force: bool,
}

impl Output<'_> {
    /// Writes one file; a key readable by its owner only. Returns its path.
    fn write(&self, name: &str, text: &str, secret: bool) -> Result<PathBuf> {
        let path = self.dir.join(name);
        let mut options = fs::OpenOptions::new();
        options.write(true).mode(if secret { 0o600 } else { 0o644 });
        if self.force {
            options.create(true).truncate(true);
        } else {
            options.create_new(true);
        }
        let mut file = options.open(&path).map_err(|error| {
            if error.kind() == io::ErrorKind::AlreadyExists {
                anyhow::anyhow!(
                    "{} exists: remove it to make it anew, or pass --force to make everything \
                     anew (a new CA included)",
                    path.display()
                )
            } else {
                anyhow::anyhow!("cannot write {}: {error}", path.display())
            }
        })?;
        if secret {
            // `mode` applies only to a file created now: an overwritten one keeps its own.
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot chmod 600 {}", path.display()))?;
        }
        file.write_all(text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

/// Prints the files and the config that uses them.
fn report(args: &Args, written: &[PathBuf], kept: &[PathBuf]) -> io::Result<()> {
    let dir = args.out.display();
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "wrote:")?;
    for path in written {
        writeln!(stdout, "  {}", path.display())?;
    }
    if !kept.is_empty() {
        writeln!(stdout, "kept (--force makes them anew):")?;
        for path in kept {
            writeln!(stdout, "  {}", path.display())?;
        }
    }
    writeln!(
        stdout,
        "\nserve TLS with these lines in the config file (or -E 2 on the command line):\n\n\
         [tls]\n\
         mode = \"required\"\n\
         cert_file = \"{dir}/server.pem\"\n\
         key_file = \"{dir}/server.key\""
    )?;
    if !args.clients.is_empty() {
        writeln!(
            stdout,
            "# mutual TLS: clients present client-NAME.pem and client-NAME.key\n\
             client_auth = \"required\"\n\
             ca_file = \"{dir}/ca.pem\"\n\
             user_from = \"cn\""
        )?;
    }
    writeln!(
        stdout,
        "\nclients trust {dir}/ca.pem: SSL_CA_CERT_FILE={dir}/ca.pem for q and PyKX, \
         NODE_EXTRA_CA_CERTS={dir}/ca.pem for node"
    )?;
    stdout.flush()
}
