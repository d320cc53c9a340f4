//! One upstream service at run time: its replicas, its TLS client, its pool, and how a
//! connection to it is made.

use std::sync::{Arc, atomic::Ordering};

use crate::{
    conn::{Login, UpstreamConn},
    error::GatewayError,
    exchange::ExchangeLimits,
    options::{Credentials, Mode, UpstreamOptions},
    pool::Pool,
    replica::Replica,
    stream::TlsClient,
};

/// A service and its state.
#[derive(Debug)]
pub(crate) struct Service {
    pub(crate) options: UpstreamOptions,
    pub(crate) replicas: Vec<Arc<Replica>>,
    pub(crate) tls: Option<TlsClient>,
    pool: Option<Pool>,
    /// The service account's login; `None` with passthrough credentials.
    login: Option<Login>,
}

impl Service {
    /// Checks `options` and loads its TLS files.
    pub(crate) fn new(options: UpstreamOptions) -> Result<Self, GatewayError> {
        let invalid = |message: &str| GatewayError::Invalid {
            upstream: options.name.clone(),
            message: message.to_owned(),
        };
        if options.servers.is_empty() {
            return Err(invalid(
                "no servers: list at least one HOST:PORT in `servers`",
            ));
        }
        let pool = match options.mode {
            Mode::Pinned => None,
            Mode::Pooled { pool_size: 0 } => {
                return Err(invalid(
                    "pool_size is 0: a pool needs at least one connection",
                ));
            }
            Mode::Pooled { pool_size } => {
                if options.credentials == Credentials::Passthrough {
                    return Err(invalid(
                        "credentials = \"passthrough\" needs mode = \"pinned\": pooled \
                         connections are shared by every user, so they cannot log in as each",
                    ));
                }
                Some(Pool::new(pool_size, options.servers.len()))
            }
        };
        if let Some(wrap) = &options.wrap
            && (wrap.is_empty() || wrap.contains('\0'))
        {
            return Err(invalid("wrap must name a q function"));
        }
        let tls = options
            .tls
            .as_ref()
            .map(|tls| TlsClient::load(&options.name, tls))
            .transpose()?;
        let login = match &options.credentials {
            Credentials::Passthrough => None,
            Credentials::Service { user, password } => Some(Login {
                user: user.as_bytes().to_vec(),
                password: password.as_ref().map(|p| p.as_bytes().to_vec()),
            }),
        };
        let replicas = options
            .servers
            .iter()
            .map(|address| Arc::new(Replica::new(&options.name, address.clone())))
            .collect();
        Ok(Self {
            options,
            replicas,
            tls,
            pool,
            login,
        })
    }

    /// The pool of a pooled service.
    pub(crate) fn pool(&self) -> &Pool {
        // Invariant: only pooled services' requests reach the pool, and they have one.
        self.pool
            .as_ref()
            .unwrap_or_else(|| unreachable!("a pinned service has no pool"))
    }

    pub(crate) fn is_pooled(&self) -> bool {
        self.pool.is_some()
    }

    /// The index of `conn`'s replica.
    pub(crate) fn replica_index(&self, conn: &UpstreamConn) -> usize {
        self.replicas
            .iter()
            .position(|replica| Arc::ptr_eq(replica, &conn.replica))
            .unwrap_or_default()
    }

    pub(crate) fn limits(&self) -> ExchangeLimits {
        ExchangeLimits {
            query_timeout: self.options.query_timeout,
            max_reply_bytes: self.options.max_reply_bytes,
        }
    }

    /// The service account's login, or with passthrough credentials the client's.
    pub(crate) fn login<'a>(&'a self, client: Option<&'a Login>) -> Option<&'a Login> {
        self.login.as_ref().or(client)
    }

    /// Connects to `replica` and logs in, recording the outcome in its state.
    ///
    /// # Errors
    ///
    /// The q error for the client, naming the service, the replica and the cause.
    pub(crate) async fn connect(
        &self,
        replica: &Arc<Replica>,
        client: Option<&Login>,
    ) -> Result<UpstreamConn, String> {
        let anonymous = Login {
            user: Vec::new(),
            password: None,
        };
        let login = self.login(client).unwrap_or(&anonymous);
        match UpstreamConn::connect(
            Arc::clone(replica),
            self.tls.as_ref(),
            login,
            self.options.connect_timeout,
            true,
        )
        .await
        {
            Ok(conn) => {
                replica.mark_up("connected");
                Ok(conn)
            }
            Err(error) => {
                let cause = error.to_string();
                replica.mark_down(&cause);
                Err(format!("qgate: {}: {cause}", replica.describe()))
            }
        }
    }

    /// Connects to the usable replica with the fewest connections, trying the others in turn
    /// when it fails (down ones last): how a pinned session picks its replica.
    ///
    /// # Errors
    ///
    /// The q error naming the last failure, when no replica could be reached.
    pub(crate) async fn connect_any(&self, client: Option<&Login>) -> Result<UpstreamConn, String> {
        let mut order: Vec<&Arc<Replica>> = self.replicas.iter().collect();
        order.sort_by_key(|replica| {
            (
                !replica.usable(),
                replica.connections.load(Ordering::Acquire),
            )
        });
        let mut last_error = String::new();
        for replica in order {
            match self.connect(replica, client).await {
                Ok(conn) => return Ok(conn),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }
}
