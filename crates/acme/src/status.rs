//! What `qgate acme status` shows, read from the storage directory alone: the certificate's facts
//! and `status.json`, where each issuance records how it went.

use std::{
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::{certificate, schedule, storage};

/// One certificate's state, as `qgate acme status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertificateStatus {
    /// The DNS names the stored certificate is for.
    pub domains: Vec<String>,
    /// Its issuer's distinguished name (the placeholder's own name before the first issuance).
    pub issuer: String,
    /// The end of its validity.
    pub not_after: SystemTime,
    /// When renewal is due: the time the running server scheduled (jitter included) when it
    /// recorded one for this certificate, otherwise `not_after - renew_before` (jitter only
    /// makes renewal earlier). For the placeholder, the last time it was written: issuance is
    /// due at once.
    pub next_renewal: SystemTime,
    /// Whether it is the self-signed placeholder written before the first issuance.
    pub placeholder: bool,
    /// The last successful issuance, if one was recorded.
    pub last_success: Option<SystemTime>,
    /// The last failed issuance since the last success, if any.
    pub last_error: Option<LastError>,
}

/// A failed issuance.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LastError {
    /// When it failed.
    pub time: SystemTime,
    /// Why, with its causes, as logged.
    pub message: String,
}

/// `status.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusFile {
    /// Unix seconds of the last successful issuance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_success: Option<u64>,
    /// The last failure since then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_error: Option<StoredError>,
    /// The renewal the running server scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) next_renewal: Option<StoredRenewal>,
}

/// A failure in `status.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredError {
    /// Unix seconds.
    pub(crate) time: u64,
    pub(crate) message: String,
}

/// A scheduled renewal in `status.json`, with the certificate it is for.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredRenewal {
    /// Unix seconds of the certificate's `not_after`, which tells whether the schedule is still
    /// the stored certificate's.
    pub(crate) not_after: u64,
    /// Unix seconds.
    pub(crate) at: u64,
}

/// Unix seconds of a time (0 before the epoch).
pub(crate) fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fn from_unix(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

impl StatusFile {
    /// Reads `status.json` from `dir`, or the empty status when there is none.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or is not a status this crate wrote.
    pub(crate) fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(storage::STATUS_FILE);
        match storage::read(&path)? {
            None => Ok(Self::default()),
            Some(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is not a status qgate wrote: remove it (it holds only the last error and \
                     the next renewal, and is written again at the next issuance)",
                    path.display()
                )
            }),
        }
    }

    /// Writes it to `dir`, atomically.
    ///
    /// # Errors
    ///
    /// When it cannot be written.
    pub(crate) fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).context("cannot serialize the status")?;
        storage::write(
            &dir.join(storage::STATUS_FILE),
            &json,
            storage::PRIVATE_MODE,
        )
    }
}

/// For `qgate acme status`: reads the storage directory alone (no network), one row per
/// certificate (a storage directory holds one): its domains, issuer, expiry, next renewal, and
/// the last error (with its time) if any. An empty list when no certificate is stored yet.
///
/// # Errors
///
/// When a file in the directory cannot be read, is too large, or is not what this crate writes.
pub fn status(storage: &Path, renew_before: Duration) -> Result<Vec<CertificateStatus>> {
    let cert_path = storage.join(storage::CERT_FILE);
    let Some(chain) = storage::read(&cert_path)? else {
        return Ok(Vec::new());
    };
    let facts = certificate::facts(&chain).with_context(|| {
        format!(
            "{} is not a certificate chain: remove it, and qgate writes a placeholder and \
             issues a new certificate at its next start",
            cert_path.display()
        )
    })?;
    let file = StatusFile::read(storage)?;
    let next_renewal = match &file.next_renewal {
        Some(renewal) if renewal.not_after == unix(facts.not_after) => from_unix(renewal.at),
        _ if facts.placeholder => facts.not_before,
        _ => schedule::renewal_time(facts.not_before, facts.not_after, renew_before, 0.0),
    };
    Ok(vec![CertificateStatus {
        domains: facts.domains,
        issuer: facts.issuer,
        not_after: facts.not_after,
        next_renewal,
        placeholder: facts.placeholder,
        last_success: file.last_success.map(from_unix),
        last_error: file.last_error.map(|error| LastError {
            time: from_unix(error.time),
            message: error.message,
        }),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn an_empty_storage_has_no_rows() {
        let temp = tempfile::tempdir().unwrap();
        assert_eq!(status(temp.path(), 30 * DAY).unwrap(), []);
    }

    #[test]
    fn the_placeholder_and_the_last_error_are_shown() {
        let temp = tempfile::tempdir().unwrap();
        let (cert, _) = certificate::placeholder(&["a.example".to_owned()]).unwrap();
        std::fs::write(temp.path().join(storage::CERT_FILE), cert).unwrap();
        StatusFile {
            last_success: None,
            last_error: Some(StoredError {
                time: 1_700_000_000,
                message: "connection refused".to_owned(),
            }),
            next_renewal: None,
        }
        .write(temp.path())
        .unwrap();
        let [row] = &status(temp.path(), 30 * DAY).unwrap()[..] else {
            panic!("one row")
        };
        assert!(row.placeholder);
        assert_eq!(row.domains, ["a.example"]);
        assert!(
            row.issuer.contains(certificate::PLACEHOLDER_CN),
            "{}",
            row.issuer
        );
        assert!(row.next_renewal < SystemTime::now());
        let error = row.last_error.as_ref().unwrap();
        assert_eq!(error.time, from_unix(1_700_000_000));
        assert_eq!(error.message, "connection refused");
    }

    #[test]
    fn a_recorded_schedule_is_used_only_for_its_certificate() {
        let temp = tempfile::tempdir().unwrap();
        let (cert, _) = certificate::placeholder(&["a.example".to_owned()]).unwrap();
        std::fs::write(temp.path().join(storage::CERT_FILE), &cert).unwrap();
        let facts = certificate::facts(cert.as_bytes()).unwrap();
        let file = |not_after| StatusFile {
            last_success: Some(5),
            last_error: None,
            next_renewal: Some(StoredRenewal { not_after, at: 42 }),
        };
        file(unix(facts.not_after)).write(temp.path()).unwrap();
        let rows = status(temp.path(), 30 * DAY).unwrap();
        assert_eq!(rows[0].next_renewal, from_unix(42));
        assert_eq!(rows[0].last_success, Some(from_unix(5)));
        file(7).write(temp.path()).unwrap();
        let rows = status(temp.path(), 30 * DAY).unwrap();
        assert_eq!(
            rows[0].next_renewal, facts.not_before,
            "placeholder: due now"
        );
    }

    #[test]
    fn corrupt_files_are_errors_that_say_what_to_do() {
        let temp = tempfile::tempdir().unwrap();
        std::fs::write(temp.path().join(storage::CERT_FILE), "junk").unwrap();
        let error = format!("{:#}", status(temp.path(), DAY).unwrap_err());
        assert!(
            error.contains("is not a certificate chain: remove it"),
            "{error}"
        );
        let (cert, _) = certificate::placeholder(&["a.example".to_owned()]).unwrap();
        std::fs::write(temp.path().join(storage::CERT_FILE), cert).unwrap();
        std::fs::write(temp.path().join(storage::STATUS_FILE), "{").unwrap();
        let error = format!("{:#}", status(temp.path(), DAY).unwrap_err());
        assert!(error.contains("is not a status qgate wrote"), "{error}");
    }
}
