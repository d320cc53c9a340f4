//! [`Acme`]: the storage directory, one issuance, and the renewal loop.
//!
//! ```text
//!   open ─> prepare ──(no valid certificate)──> issue ─┐
//!              │                                       v
//!              └──(valid)──> sleep until renewal ──> issue ──ok──> renewed() ──> sleep ...
//!                                   ^                  │
//!                                   └── backoff ◄─ err ┘  (the old certificate keeps serving)
//! ```

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, bail};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use tracing::{info, warn};

use crate::{
    certificate,
    challenges::{Challenges, Published},
    client,
    options::{AcmeOptions, ChallengeKind},
    schedule::{self, Backoff},
    status::{StatusFile, StoredError, StoredRenewal, unix},
    storage,
};

/// The longest one issuance may take, from the account to the chain written: 10 minutes.
///
/// Let's Encrypt validates in seconds and issues in a few more. An issuance past this limit is
/// stuck (a CA that accepted connections and stopped answering, a validation queue backed up);
/// giving up lets the backoff retry it, and removes its published challenges meanwhile.
pub const ISSUE_TIMEOUT: Duration = Duration::from_secs(600);

/// How long to wait for the CA to validate the challenges: 3 minutes of polling, starting at
/// a second and backing off by half again each time.
const VALIDATION_POLICY: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_secs(1))
    .backoff(1.5)
    .timeout(Duration::from_secs(180));

/// How long to wait for the CA to sign once the order is finalized: 2 minutes, polled as above.
const SIGNING_POLICY: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_secs(1))
    .backoff(1.5)
    .timeout(Duration::from_secs(120));

/// The longest single sleep of the renewal loop: one hour.
///
/// The renewal time is wall-clock time, but a sleep counts monotonic time, which stands still
/// while a machine is suspended; waking every hour to look at the clock again keeps a suspended
/// or clock-adjusted machine from renewing late by the time it was away.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// Certificates for one set of domains from one ACME CA, kept in one storage directory.
#[derive(Debug)]
pub struct Acme {
    options: AcmeOptions,
    challenges: Arc<Challenges>,
    /// One issuance at a time: two would race on the account file and the certificate files.
    /// A tokio mutex, since it is held across the whole issuance.
    issuing: tokio::sync::Mutex<()>,
}

/// What the storage holds, as [`Acme::prepare`] judges it.
#[derive(Debug)]
enum Stored {
    /// No certificate and key the server could load: missing, unreadable, or not a pair.
    Unloadable(String),
    /// A pair the server can load.
    Loadable(certificate::Facts),
}

impl Acme {
    /// Checks the storage directory (or creates it, mode 0700) and the private files in it, and
    /// keeps `challenges` to publish answers into.
    ///
    /// # Errors
    ///
    /// When no domain is given, or a domain is a wildcard; when the storage directory cannot be
    /// created, or it or a key file in it (`account.json`, `key.pem`) lets group or others in
    /// (with the `chmod` that fixes it).
    pub fn open(options: AcmeOptions, challenges: Arc<Challenges>) -> Result<Self> {
        if options.domains.is_empty() {
            bail!("tls.acme.domains is empty: name at least one domain to get a certificate for");
        }
        if let Some(domain) = options.domains.iter().find(|domain| domain.contains('*')) {
            bail!(
                "tls.acme.domains has the wildcard {domain}, which {} cannot prove (only DNS-01 \
                 can): name each host",
                options.challenge.name()
            );
        }
        storage::open_dir(&options.storage)?;
        for file in [storage::ACCOUNT_FILE, storage::KEY_FILE] {
            storage::check_private(&options.storage.join(file))?;
        }
        Ok(Self {
            options,
            challenges,
            issuing: tokio::sync::Mutex::new(()),
        })
    }

    /// The certificate chain the server's TLS loads: `cert.pem` in the storage directory.
    pub fn cert_file(&self) -> PathBuf {
        self.options.storage.join(storage::CERT_FILE)
    }

    /// The private key the server's TLS loads: `key.pem` in the storage directory.
    pub fn key_file(&self) -> PathBuf {
        self.options.storage.join(storage::KEY_FILE)
    }

    /// Makes sure the server has a certificate to start TLS with: when there is no loadable pair
    /// yet (first start, or files that are damaged or do not match), writes a self-signed
    /// placeholder for the domains, so that the server can start and answer TLS-ALPN-01 on its
    /// own port. Returns whether the stored certificate is a CA's, unexpired, and names every
    /// domain, that is, whether no issuance is needed now.
    ///
    /// # Errors
    ///
    /// When the storage cannot be read or the placeholder cannot be written.
    pub fn prepare(&self) -> Result<bool> {
        let facts = match self.stored()? {
            Stored::Loadable(facts) => facts,
            Stored::Unloadable(reason) => {
                info!(
                    storage = %self.options.storage.display(),
                    reason,
                    "writing a placeholder certificate until the first issuance"
                );
                let (cert, key) = certificate::placeholder(&self.options.domains)?;
                self.install(cert.as_bytes(), key.as_bytes())?;
                return Ok(false);
            }
        };
        let valid = !facts.placeholder
            && facts.not_after > SystemTime::now()
            && facts.covers(&self.options.domains);
        Ok(valid)
    }

    /// Reads the stored pair.
    fn stored(&self) -> Result<Stored> {
        let cert_path = self.cert_file();
        let key_path = self.key_file();
        let Some(chain) = storage::read(&cert_path)? else {
            return Ok(Stored::Unloadable(format!(
                "{} does not exist",
                cert_path.display()
            )));
        };
        let Some(key) = storage::read(&key_path)? else {
            return Ok(Stored::Unloadable(format!(
                "{} does not exist",
                key_path.display()
            )));
        };
        let facts = match certificate::facts(&chain) {
            Ok(facts) => facts,
            Err(error) => {
                warn!(file = %cert_path.display(), error = format!("{error:#}"), "the stored certificate cannot be read");
                return Ok(Stored::Unloadable(format!(
                    "{} cannot be read: {error:#}",
                    cert_path.display()
                )));
            }
        };
        match certificate::key_matches(&facts, &key) {
            Ok(true) => Ok(Stored::Loadable(facts)),
            Ok(false) => Ok(Stored::Unloadable(format!(
                "{} is not the key of {}",
                key_path.display(),
                cert_path.display()
            ))),
            Err(error) => Ok(Stored::Unloadable(format!(
                "{} cannot be read: {error:#}",
                key_path.display()
            ))),
        }
    }

    /// Writes a chain and its key into place: both staged first, then the key renamed and the
    /// chain right after, so that the window in which they do not match is two renames wide
    /// (and [`Acme::prepare`] replaces a pair left mismatched by a crash).
    fn install(&self, chain: &[u8], key: &[u8]) -> Result<()> {
        let cert_path = self.cert_file();
        let key_path = self.key_file();
        let key = storage::stage(&key_path, key, storage::PRIVATE_MODE)?;
        let chain = storage::stage(&cert_path, chain, storage::PUBLIC_MODE)?;
        key.commit()?;
        chain.commit()
    }

    /// One issuance: the account (created once, its key stored), an order for the domains, the
    /// challenges published into the shared [`Challenges`] and validated, the order finalized
    /// with a fresh key and CSR, and the chain and key written atomically (key 0600). The
    /// challenge answers are removed when it ends, success or not, and the outcome is recorded
    /// for [`status`](crate::status()).
    ///
    /// # Errors
    ///
    /// When any step fails or the whole takes longer than [`ISSUE_TIMEOUT`]; the stored
    /// certificate is then untouched. The error names the step, the CA's answer, and the likely
    /// fix.
    pub async fn issue(&self) -> Result<()> {
        let _issuing = self.issuing.lock().await;
        let result = match tokio::time::timeout(ISSUE_TIMEOUT, self.issue_once()).await {
            Ok(result) => result,
            Err(_) => Err(anyhow::anyhow!(
                "the issuance took longer than {}s and was abandoned: the CA at {} is slow or \
                 stalled; it is retried",
                ISSUE_TIMEOUT.as_secs(),
                self.options.directory
            )),
        };
        let mut status = StatusFile::read(&self.options.storage).unwrap_or_default();
        match &result {
            Ok(()) => {
                status.last_success = Some(unix(SystemTime::now()));
                status.last_error = None;
                status.next_renewal = None;
            }
            Err(error) => {
                status.last_error = Some(StoredError {
                    time: unix(SystemTime::now()),
                    message: format!("{error:#}"),
                });
            }
        }
        if let Err(error) = status.write(&self.options.storage) {
            warn!(
                error = format!("{error:#}"),
                "cannot record the issuance's outcome"
            );
        }
        result
    }

    async fn issue_once(&self) -> Result<()> {
        let options = &self.options;
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = options
            .domains
            .iter()
            .map(|domain| Identifier::Dns(domain.clone()))
            .collect();
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .with_context(|| {
                format!(
                    "the CA at {} refused an order for {:?}",
                    options.directory, options.domains
                )
            })?;
        let kind = match options.challenge {
            ChallengeKind::Http01 => ChallengeType::Http01,
            ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
        };
        let mut published = Published::new(&self.challenges);
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.context("cannot fetch an authorization")?;
            let domain = authorization.identifier().to_string();
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                status => bail!(
                    "the CA's authorization for {domain} is {status:?}, not pending: it is \
                     retried with a new order"
                ),
            }
            let mut challenge = authorization.challenge(kind.clone()).with_context(|| {
                format!(
                    "the CA offers no {} challenge for {domain}: set tls.acme.challenge to \
                     another kind",
                    options.challenge.name()
                )
            })?;
            let key_authorization = challenge.key_authorization();
            match options.challenge {
                ChallengeKind::Http01 => {
                    published.http01(&challenge.token, key_authorization.as_str().to_owned());
                }
                ChallengeKind::TlsAlpn01 => {
                    let key = certificate::tls_alpn_challenge(
                        &domain,
                        key_authorization.digest().as_ref(),
                    )?;
                    published.tls_alpn(&domain, key);
                }
            }
            challenge
                .set_ready()
                .await
                .with_context(|| format!("the CA refused to start validating {domain}"))?;
        }
        info!(domains = ?options.domains, challenge = options.challenge.name(), "challenges published; the CA is validating");

        let ready = order.poll_ready(&VALIDATION_POLICY).await;
        if !matches!(ready, Ok(OrderStatus::Ready)) {
            let mut causes = Vec::new();
            let mut authorizations = order.authorizations();
            while let Some(Ok(mut authorization)) = authorizations.next().await {
                if authorization.refresh().await.is_err() {
                    continue;
                }
                let domain = authorization.identifier().to_string();
                for challenge in &authorization.challenges {
                    if let Some(problem) = &challenge.error {
                        causes.push(format!("{domain}: {problem}"));
                    }
                }
            }
            let hint = match options.challenge {
                ChallengeKind::TlsAlpn01 => {
                    "the CA must reach port 443 of each domain and find qgate's TLS there \
                     (the q port on 443, or 443 forwarded to it), with DNS pointing at this host"
                }
                ChallengeKind::Http01 => {
                    "the CA must reach http://DOMAIN/.well-known/acme-challenge/ on port 80 and \
                     find qgate's HTTP there, with DNS pointing at this host"
                }
            };
            let outcome = match ready {
                Ok(status) => format!("the order is {status:?}"),
                Err(error) => format!("{error}"),
            };
            bail!(
                "the CA did not validate {:?} ({}): {outcome}{}; {hint}",
                options.domains,
                options.challenge.name(),
                if causes.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", causes.join("; "))
                },
            );
        }
        drop(published);

        let (key_pem, csr) = certificate::key_and_csr(&options.domains)?;
        order
            .finalize_csr(&csr)
            .await
            .context("the CA refused to finalize the order")?;
        let chain = order
            .poll_certificate(&SIGNING_POLICY)
            .await
            .context("the CA did not deliver the certificate")?;
        let facts =
            certificate::check_issued(chain.as_bytes(), key_pem.as_bytes(), &options.domains)?;
        self.install(chain.as_bytes(), key_pem.as_bytes())?;
        info!(
            domains = ?facts.domains,
            issuer = facts.issuer,
            not_after = unix(facts.not_after),
            "certificate issued"
        );
        Ok(())
    }

    /// The ACME account: the stored one when it is for this directory, otherwise a new one,
    /// stored (0600) before it is used.
    async fn account(&self) -> Result<Account> {
        let options = &self.options;
        let unreachable = || {
            format!(
                "cannot reach the ACME directory {}: check the URL and the network; for a \
                 private CA (such as Pebble) set tls.acme.directory_ca_file to the CA that signs \
                 its HTTPS certificate",
                options.directory
            )
        };
        let path = options.storage.join(storage::ACCOUNT_FILE);
        storage::check_private(&path)?;
        if let Some(bytes) = storage::read(&path)? {
            let corrupt = || {
                format!(
                    "{} is not an ACME account qgate wrote: move it away, and a new account is \
                     created",
                    path.display()
                )
            };
            let json: serde_json::Value = serde_json::from_slice(&bytes).with_context(corrupt)?;
            if json.get("directory").and_then(serde_json::Value::as_str)
                == Some(options.directory.as_str())
            {
                let credentials: AccountCredentials =
                    serde_json::from_value(json).with_context(corrupt)?;
                let http = client::new(options.directory_ca_file.as_deref())?;
                return Account::builder_with_http(http)
                    .from_credentials(credentials)
                    .await
                    .with_context(unreachable);
            }
            info!(
                directory = options.directory,
                "the stored ACME account is for another directory; creating one for this one"
            );
        }
        let contact = options
            .email
            .as_ref()
            .map(|email| format!("mailto:{email}"));
        let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
        let http = client::new(options.directory_ca_file.as_deref())?;
        let (account, credentials) = Account::builder_with_http(http)
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                options.directory.clone(),
                None,
            )
            .await
            .with_context(|| {
                format!(
                    "{}; or the CA refused a new account{}",
                    unreachable(),
                    if options.email.is_some() {
                        " (check tls.acme.email)"
                    } else {
                        ""
                    }
                )
            })?;
        let json = serde_json::to_vec(&credentials).context("cannot serialize the account")?;
        storage::write(&path, &json, storage::PRIVATE_MODE)?;
        info!(
            id = account.id(),
            directory = options.directory,
            "ACME account created"
        );
        Ok(account)
    }

    /// Forever: issues now if [`Acme::prepare`] finds no valid certificate; then sleeps until
    /// `not_after - renew_before`, less a jitter of up to a tenth of `renew_before` (so that
    /// certificates issued together do not renew together; jitter only makes renewal earlier),
    /// and renews. A failure is logged with its causes and recorded for
    /// [`status`](crate::status()), and retried after a backoff from one minute doubling to six
    /// hours, while the old certificate keeps serving. `renewed` is called after each
    /// successful issuance (the server reloads its certificate then).
    pub async fn run(self, renewed: impl Fn() + Send + Sync + 'static) {
        loop {
            let due = self.due().unwrap_or_else(|error| {
                warn!(
                    error = format!("{error:#}"),
                    "cannot read the stored certificate; issuing a new one"
                );
                SystemTime::now()
            });
            sleep_until(due).await;
            let mut backoff = Backoff::default();
            while let Err(error) = self.issue().await {
                let delay = backoff.next_delay();
                warn!(
                    domains = ?self.options.domains,
                    error = format!("{error:#}"),
                    retry_in_s = delay.as_secs(),
                    "ACME issuance failed; the current certificate keeps serving"
                );
                tokio::time::sleep(delay).await;
            }
            renewed();
        }
    }

    /// When the next issuance is due: now when no valid certificate is stored, otherwise its
    /// renewal time with a fresh jitter, recorded for `qgate acme status`.
    fn due(&self) -> Result<SystemTime> {
        if !self.prepare()? {
            return Ok(SystemTime::now());
        }
        let Stored::Loadable(facts) = self.stored()? else {
            return Ok(SystemTime::now());
        };
        let at = schedule::renewal_time(
            facts.not_before,
            facts.not_after,
            self.options.renew_before,
            schedule::random_fraction(),
        );
        let mut status = StatusFile::read(&self.options.storage).unwrap_or_default();
        status.next_renewal = Some(StoredRenewal {
            not_after: unix(facts.not_after),
            at: unix(at),
        });
        if let Err(error) = status.write(&self.options.storage) {
            warn!(
                error = format!("{error:#}"),
                "cannot record the next renewal"
            );
        }
        info!(domains = ?self.options.domains, renew_at = unix(at), not_after = unix(facts.not_after), "certificate valid; renewal scheduled");
        Ok(at)
    }

    /// The storage directory.
    pub fn storage(&self) -> &Path {
        &self.options.storage
    }
}

/// Sleeps until a wall-clock time, in steps of at most [`MAX_SLEEP`].
async fn sleep_until(at: SystemTime) {
    while let Ok(left) = at.duration_since(SystemTime::now()) {
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(left.min(MAX_SLEEP)).await;
    }
}
