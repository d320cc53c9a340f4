//! A client session's link to the upstreams: its pinned connections, and the pooled services it
//! leases from.

use std::{io, sync::Arc};

use qgate_hooks::{Downstream, ForwardError, Link, LinkClosed, Push, Request};
use qgate_ipc::MessageType;

use crate::{
    Inner,
    conn::{Login, UpstreamConn, UpstreamError},
    exchange::{self, ExchangeError, Pushes},
    pool,
    replica::InFlight,
    request,
    service::Service,
};

/// One client session's way to the upstreams ([`qgate_hooks::Link`]).
///
/// Pinned services get a connection of the session's own, opened at login for the default
/// service and on first use for the others, and closed with the session; pooled services lease a
/// shared connection for each request.
pub struct GatewayLink {
    inner: Arc<Inner>,
    /// The session's user: the fair queue's key, and what `wrap` passes upstream.
    user: Arc<[u8]>,
    /// The client's own login, for services with passthrough credentials.
    login: Login,
    /// The pinned connection to each service, by index; `None` until opened, and for pooled
    /// services.
    pins: Vec<Option<UpstreamConn>>,
}

impl std::fmt::Debug for GatewayLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayLink")
            .field("user", &String::from_utf8_lossy(&self.user))
            .field("pins", &self.pins)
            .finish_non_exhaustive()
    }
}

impl GatewayLink {
    pub(crate) async fn open(inner: Arc<Inner>, user: Arc<[u8]>, login: Login) -> Self {
        let mut link = Self {
            pins: (0..inner.services.len()).map(|_| None).collect(),
            inner,
            user,
            login,
        };
        let default = Arc::clone(&link.inner.services[0]);
        if !default.is_pooled() {
            match default.connect_any(Some(&link.login)).await {
                Ok(conn) => link.pins[0] = Some(conn),
                Err(error) => tracing::warn!(
                    upstream = %default.options.name,
                    %error,
                    "cannot open this session's upstream connection; its queries will try again"
                ),
            }
        }
        link
    }

    /// The service a message goes to, and its index.
    fn service(&self, route: Option<&str>) -> Result<(usize, Arc<Service>), ForwardError> {
        let index = match route {
            None => 0,
            Some(name) => *self.inner.by_name.get(name).ok_or_else(|| {
                ForwardError::Refuse(format!("qgate: no upstream is named {name:?}"))
            })?,
        };
        Ok((index, Arc::clone(&self.inner.services[index])))
    }

    /// The session's pinned connection to service `index`, opened if it is not yet.
    async fn pinned(
        &mut self,
        index: usize,
        service: &Service,
    ) -> Result<&mut UpstreamConn, ForwardError> {
        if self.pins[index].is_none() {
            let conn = service
                .connect_any(Some(&self.login))
                .await
                .map_err(ForwardError::Refuse)?;
            self.pins[index] = Some(conn);
        }
        // Invariant: set just above when it was not.
        Ok(self.pins[index]
            .as_mut()
            .unwrap_or_else(|| unreachable!("the pin was just opened")))
    }

    /// Drops service `index`'s pinned connection (a timeout left it owing a reply), closing it.
    fn unpin(&mut self, index: usize) {
        if let Some(conn) = self.pins[index].take() {
            tokio::spawn(conn.close());
        }
    }

    async fn sync_pinned<D: Downstream>(
        &mut self,
        index: usize,
        service: &Service,
        frame: &[u8],
        client: &mut D,
    ) -> Result<(), ForwardError> {
        let conn = self.pinned(index, service).await?;
        let _in_flight = InFlight::new(&conn.replica);
        let replica = Arc::clone(&conn.replica);
        let result =
            exchange::exchange(conn, frame, client, Pushes::Forward, service.limits()).await;
        let Err(error) = result else {
            return Ok(());
        };
        let described = replica.describe();
        match error {
            ExchangeError::TooLarge { size, limit } => Err(too_large(&described, size, limit)),
            ExchangeError::Timeout(after) => {
                self.unpin(index);
                tracing::warn!(
                    upstream = %service.options.name,
                    server = %replica.address,
                    limit = "query_timeout",
                    after = ?after,
                    "query timed out; the session's upstream connection was dropped (its session \
                     state there is lost) and is opened again at the next query"
                );
                Err(ForwardError::Refuse(timeout_message(&described, after)))
            }
            ExchangeError::ClientGone(source) => {
                // The upstream still owes the reply; nobody will read it.
                self.unpin(index);
                Err(ForwardError::Client(
                    source.unwrap_or_else(client_went_away),
                ))
            }
            ExchangeError::Upstream(error) => {
                self.unpin(index);
                note_failure(&replica, &error);
                Err(ForwardError::Close(format!("qgate: {described}: {error}")))
            }
            ExchangeError::UpstreamMidReply(error) => {
                self.unpin(index);
                note_failure(&replica, &error);
                Err(ForwardError::Broken(format!("{described}: {error}")))
            }
        }
    }

    async fn sync_pooled<D: Downstream>(
        &self,
        service: &Arc<Service>,
        frame: &[u8],
        client: &mut D,
    ) -> Result<(), ForwardError> {
        let mut lease = pool::checkout(service, &self.user)
            .await
            .map_err(ForwardError::Refuse)?;
        let replica = Arc::clone(&lease.conn().replica);
        let _in_flight = InFlight::new(&replica);
        let result =
            exchange::exchange(lease.conn(), frame, client, Pushes::Drop, service.limits()).await;
        let Err(error) = result else {
            return Ok(());
        };
        let described = replica.describe();
        match error {
            ExchangeError::TooLarge { size, limit } => Err(too_large(&described, size, limit)),
            ExchangeError::Timeout(after) => {
                lease.close();
                tracing::warn!(
                    upstream = %service.options.name,
                    server = %replica.address,
                    limit = "query_timeout",
                    after = ?after,
                    "query timed out; its pooled connection was dropped and will be replaced"
                );
                Err(ForwardError::Refuse(timeout_message(&described, after)))
            }
            // Dropping the lease drains the reply before the connection is used again.
            ExchangeError::ClientGone(source) => {
                drop(lease);
                Err(ForwardError::Client(
                    source.unwrap_or_else(client_went_away),
                ))
            }
            ExchangeError::Upstream(error) => {
                lease.close();
                note_failure(&replica, &error);
                Err(ForwardError::Refuse(format!("qgate: {described}: {error}")))
            }
            ExchangeError::UpstreamMidReply(error) => {
                lease.close();
                note_failure(&replica, &error);
                Err(ForwardError::Broken(format!("{described}: {error}")))
            }
        }
    }

    /// Writes an async frame to service `index`.
    async fn send_frame(
        &mut self,
        index: usize,
        service: &Arc<Service>,
        frame: &[u8],
    ) -> Result<(), ForwardError> {
        if service.is_pooled() {
            let mut lease = pool::checkout(service, &self.user)
                .await
                .map_err(ForwardError::Refuse)?;
            let conn = lease.conn();
            if let Err(error) = conn.write(frame).await {
                let described = conn.replica.describe();
                note_failure(&conn.replica, &error);
                lease.close();
                return Err(ForwardError::Refuse(format!("qgate: {described}: {error}")));
            }
            return Ok(());
        }
        let conn = self.pinned(index, service).await?;
        if let Err(error) = conn.write(frame).await {
            let described = conn.replica.describe();
            note_failure(&conn.replica, &error);
            self.unpin(index);
            return Err(ForwardError::Close(format!("qgate: {described}: {error}")));
        }
        Ok(())
    }
}

impl Link for GatewayLink {
    async fn sync<D: Downstream>(
        &mut self,
        route: Option<&str>,
        request: &Request,
        client: &mut D,
    ) -> Result<(), ForwardError> {
        let (index, service) = self.service(route)?;
        let frame = request::frame(
            request,
            MessageType::Sync,
            service.options.wrap.as_deref(),
            &self.user,
        )
        .map_err(ForwardError::Refuse)?;
        if service.is_pooled() {
            self.sync_pooled(&service, &frame, client).await
        } else {
            self.sync_pinned(index, &service, &frame, client).await
        }
    }

    async fn send_async(
        &mut self,
        route: Option<&str>,
        request: &Request,
    ) -> Result<(), ForwardError> {
        let (index, service) = self.service(route)?;
        let frame = request::frame(
            request,
            MessageType::Async,
            service.options.wrap.as_deref(),
            &self.user,
        )
        .map_err(ForwardError::Refuse)?;
        self.send_frame(index, &service, &frame).await
    }

    async fn respond(&mut self, request: &Request) -> Result<bool, ForwardError> {
        // A response answers a sync request an upstream sent this client; pinned connections are
        // the only ones that send the client anything, and the default service's is the one
        // that can. Responses go unwrapped: they answer the upstream, not run there.
        let Some(conn) = self.pins.iter_mut().flatten().next() else {
            return Ok(false);
        };
        let frame = request::frame(request, MessageType::Response, None, &self.user)
            .map_err(ForwardError::Refuse)?;
        if let Err(error) = conn.write(&frame).await {
            return Err(ForwardError::Close(format!(
                "qgate: {}: {error}",
                conn.replica.describe()
            )));
        }
        Ok(true)
    }

    async fn push(&mut self) -> Result<Push, LinkClosed> {
        loop {
            let (index, frames) = next_frame(&mut self.pins, &self.inner.services).await;
            let service = &self.inner.services[index];
            match frames {
                Ok(Some(frames)) => {
                    return Ok(Push {
                        frames,
                        from: service.options.name.clone(),
                    });
                }
                Ok(None) => {}
                Err(error) => {
                    let described = self.pins[index]
                        .as_ref()
                        .map(|conn| conn.replica.describe())
                        .unwrap_or_default();
                    if let Some(conn) = &self.pins[index] {
                        note_failure(&conn.replica, &error);
                    }
                    self.pins[index] = None;
                    return Err(LinkClosed(format!("{described}: {error}")));
                }
            }
        }
    }
}

/// The most bytes of pushes handed to the client in one write: a burst read in one go, and a
/// bound on what one write holds.
pub(crate) const PUSH_BATCH_BYTES: usize = 256 * 1024;

/// The next frame any pinned connection receives unasked, with its service's index: `Ok(None)`
/// for one that was read and dropped (a stray response, a push over the limit). Cancel-safe, as
/// each connection's reads are. Pending for ever without a pinned connection.
async fn next_frame(
    pins: &mut [Option<UpstreamConn>],
    services: &[Arc<Service>],
) -> (usize, Result<Option<Vec<u8>>, UpstreamError>) {
    let mut open: Vec<(usize, &mut UpstreamConn, u64)> = pins
        .iter_mut()
        .enumerate()
        .filter_map(|(index, pin)| {
            let limit = services[index].options.max_reply_bytes;
            pin.as_mut().map(|conn| (index, conn, limit))
        })
        .collect();
    match open.as_mut_slice() {
        [] => std::future::pending().await,
        [(index, conn, limit)] => (*index, unasked(conn, *limit).await),
        _ => {
            std::future::poll_fn(|context| {
                for (index, conn, limit) in open.iter_mut() {
                    let future = unasked(conn, *limit);
                    let mut future = std::pin::pin!(future);
                    if let std::task::Poll::Ready(result) = future.as_mut().poll(context) {
                        return std::task::Poll::Ready((*index, result));
                    }
                }
                std::task::Poll::Pending
            })
            .await
        }
    }
}

/// The next frame `conn` receives between requests, with those right behind it that are already
/// read; one over `limit` bytes is read and dropped. Cancel-safe.
async fn unasked(conn: &mut UpstreamConn, limit: u64) -> Result<Option<Vec<u8>>, UpstreamError> {
    let header = conn.peek_header().await?;
    if header.len() as u64 > limit {
        tracing::warn!(
            upstream = %conn.replica.service,
            server = %conn.replica.address,
            size = header.len(),
            limit = "max_reply_bytes",
            "upstream push over the limit; dropped"
        );
        conn.discard(header.len()).await?;
        return Ok(None);
    }
    let mut frames = conn.read_frame().await?;
    if header.message_type == MessageType::Response {
        conn.shrink();
        tracing::warn!(
            upstream = %conn.replica.service,
            server = %conn.replica.address,
            "upstream sent a response nobody asked for; dropped"
        );
        return Ok(None);
    }
    // The rest of a burst that arrived with it goes out in the same write.
    conn.take_buffered(&mut frames, PUSH_BATCH_BYTES, |next| {
        next.message_type != MessageType::Response && next.len() as u64 <= limit
    });
    conn.shrink();
    Ok(Some(frames))
}

fn too_large(described: &str, size: u64, limit: u64) -> ForwardError {
    ForwardError::Refuse(format!(
        "qgate: the reply from {described} is {size} bytes, over max_reply_bytes ({limit} \
         bytes); it was not forwarded"
    ))
}

fn timeout_message(described: &str, after: std::time::Duration) -> String {
    format!(
        "timeout: {described} did not answer within {after:?} (query_timeout); the query may still \
         be running there"
    )
}

fn client_went_away() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the client closed its connection while its query ran",
    )
}

/// Records a connection failure in the replica's status, without marking it down: one broken
/// connection says little about the replica, and the health check decides.
fn note_failure(replica: &crate::replica::Replica, error: &UpstreamError) {
    replica.set_error(&error.to_string());
}
