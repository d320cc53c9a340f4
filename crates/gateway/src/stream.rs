//! The byte stream to one upstream replica: TCP, or TLS over TCP, and how one is opened.

use std::{
    io,
    path::Path,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use qgate_files::ReadRules;
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

use crate::{
    error::GatewayError,
    options::{ServerAddress, UpstreamTls},
};

/// The largest certificate or key file read for upstream TLS: a CA bundle of a few hundred
/// certificates is under 1 MiB.
const MAX_PEM_FILE_BYTES: u64 = 1 << 20;

/// A connection to a replica, plain or TLS.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// What opening a TLS connection to a service needs, made once at start.
#[derive(Clone)]
pub(crate) struct TlsClient {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Loads the CA bundle and the client certificate of `tls`.
    pub(crate) fn load(service: &str, tls: &UpstreamTls) -> Result<Self, GatewayError> {
        let error = |message: String| GatewayError::Tls {
            upstream: service.to_owned(),
            message,
        };
        let mut roots = RootCertStore::empty();
        let certificates = read_certificates(&tls.ca_file).map_err(&error)?;
        let (added, _) = roots.add_parsable_certificates(certificates);
        if added == 0 {
            return Err(error(format!(
                "{:?} holds no usable CA certificate",
                tls.ca_file
            )));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| error(e.to_string()))?
            .with_root_certificates(roots);
        let config = match &tls.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert_file, key_file)) => {
                let chain = read_certificates(cert_file).map_err(&error)?;
                let key = read_key(key_file).map_err(&error)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| error(format!("client certificate {cert_file:?}: {e}")))?
            }
        };
        let server_name = match &tls.server_name {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|e| error(format!("server_name {name:?}: {e}")))?,
            ),
            None => None,
        };
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    qgate_files::read(path, ReadRules::new(MAX_PEM_FILE_BYTES)).map_err(|e| e.to_string())
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_pem(path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{path:?}: {e}"))?;
    if certificates.is_empty() {
        return Err(format!("{path:?} holds no PEM certificate"));
    }
    Ok(certificates)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_pem(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| format!("{path:?}: {e}"))
}

/// Opens a stream to `address`, with TLS when `tls` is set. The caller bounds the time.
pub(crate) async fn open(address: &ServerAddress, tls: Option<&TlsClient>) -> io::Result<Stream> {
    let tcp = TcpStream::connect((address.host.as_str(), address.port)).await?;
    // Queries are small and wait for their answer: Nagle's delay would only slow them down.
    tcp.set_nodelay(true)?;
    let Some(tls) = tls else {
        return Ok(Stream::Plain(tcp));
    };
    let name = match &tls.server_name {
        Some(name) => name.clone(),
        None => ServerName::try_from(address.host.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
    };
    let stream = tls.connector.connect(name, tcp).await?;
    Ok(Stream::Tls(Box::new(stream)))
}

impl Stream {
    /// The TCP socket itself, when the upstream's bytes come on it as they are (not over TLS).
    pub(crate) fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Self::Plain(stream) => Some(stream),
            Self::Tls(_) => None,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
