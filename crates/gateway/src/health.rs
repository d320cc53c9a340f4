//! Health checks: each replica is probed every `health_interval` on a connection of its own, and
//! marked up or down by the outcome; a pooled service's idle connections are swept at the same
//! time (pushes read and dropped, lost connections closed).
//!
//! A probe is the service's `health_query` sent as a sync string query; any answer, a q error
//! included, means the process is alive. With passthrough credentials there is no account to log
//! in with, so a probe is a TCP (and TLS) connection alone.

use std::{sync::Arc, time::Duration};

use qgate_ipc::{K, MessageType, encode_message};

use crate::{
    conn::{Login, UpstreamConn, UpstreamError},
    replica::Replica,
    service::Service,
    stream,
};

/// Checks every replica of `service`, for ever.
pub(crate) async fn watch(service: Arc<Service>) {
    let checks = service.replicas.iter().map(|replica| {
        let service = Arc::clone(&service);
        let replica = Arc::clone(replica);
        async move { watch_replica(&service, &replica).await }
    });
    let tasks: Vec<_> = checks.map(tokio::spawn).collect();
    for task in tasks {
        let _ = task.await;
    }
}

async fn watch_replica(service: &Service, replica: &Arc<Replica>) {
    let probe_frame = encode_message(
        MessageType::Sync,
        &K::string(service.options.health_query.as_bytes()),
    )
    .unwrap_or_default();
    let mut conn: Option<UpstreamConn> = None;
    let mut every = tokio::time::interval(service.options.health_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match probe(service, replica, &mut conn, &probe_frame).await {
            Ok(()) => replica.mark_up("health check"),
            Err(cause) => {
                if let Some(conn) = conn.take() {
                    tokio::spawn(conn.close());
                }
                replica.mark_down(&format!("health check: {cause}"));
            }
        }
        if service.is_pooled() {
            service.pool().sweep(service);
        }
    }
}

/// One probe of `replica`, on `conn` (opened when it is not).
async fn probe(
    service: &Service,
    replica: &Arc<Replica>,
    conn: &mut Option<UpstreamConn>,
    frame: &[u8],
) -> Result<(), String> {
    let timeout = service.options.connect_timeout;
    let Some(login) = service.login(None) else {
        // Passthrough: nobody to log in as; a connection is the probe.
        return tokio::time::timeout(
            timeout,
            stream::open(&replica.address, service.tls.as_ref()),
        )
        .await
        .map_err(|_| format!("no connection within {timeout:?} (connect_timeout)"))?
        .map(drop)
        .map_err(|e| format!("cannot connect: {e}"));
    };
    if conn.is_none() {
        *conn = Some(connect(service, replica, login, timeout).await?);
    }
    // Invariant: set just above when it was not.
    let Some(open) = conn.as_mut() else {
        return Err("no connection".to_owned());
    };
    tokio::time::timeout(timeout, ask(open, frame))
        .await
        .map_err(|_| format!("no answer to the probe within {timeout:?}"))?
        .map_err(|e| e.to_string())
}

async fn connect(
    service: &Service,
    replica: &Arc<Replica>,
    login: &Login,
    timeout: Duration,
) -> Result<UpstreamConn, String> {
    UpstreamConn::connect(
        Arc::clone(replica),
        service.tls.as_ref(),
        login,
        timeout,
        false,
    )
    .await
    .map_err(|e| e.to_string())
}

/// Sends the probe and reads frames until its response.
async fn ask(conn: &mut UpstreamConn, frame: &[u8]) -> Result<(), UpstreamError> {
    conn.write(frame).await?;
    loop {
        let header = conn.peek_header().await?;
        conn.discard(header.len()).await?;
        if header.message_type == MessageType::Response {
            conn.shrink();
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_probe_encodes() {
        let frame =
            qgate_ipc::encode_message(qgate_ipc::MessageType::Sync, &qgate_ipc::K::string("::"))
                .unwrap();
        assert_eq!(frame.len(), 8 + 6 + 2);
    }
}
