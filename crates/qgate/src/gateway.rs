//! The gateway's options from a config: `[[upstream]]` (or `--upstream`) to
//! `qgate_gateway::GatewayOptions`, with `password_env` read from the environment.

use anyhow::{Context as _, Result, anyhow};
use qgate_config::{Config, CredentialsMode, UpstreamMode};
use qgate_gateway::{
    Credentials, GatewayOptions, Mode, ServerAddress, UpstreamOptions, UpstreamTls,
};

/// The gateway's options, or `None` when no upstream is configured (qgate answers with its
/// plugins alone). Environment variables are read through `env`.
///
/// # Errors
///
/// When a `password_env` names a variable that is not set, or a server is not `HOST:PORT`.
pub(crate) fn gateway_options(
    config: &Config,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<GatewayOptions>> {
    if config.upstream.is_empty() {
        return Ok(None);
    }
    let upstreams = config
        .upstream
        .as_slice()
        .iter()
        .map(|upstream| {
            let servers = upstream
                .servers
                .iter()
                .map(|server| {
                    ServerAddress::parse(server)
                        .map_err(|error| anyhow!("upstream {}: {error}", upstream.name))
                })
                .collect::<Result<Vec<_>>>()?;
            let mut options = UpstreamOptions::new(upstream.name.clone(), servers);
            options.credentials = match upstream.credentials {
                CredentialsMode::Passthrough => Credentials::Passthrough,
                CredentialsMode::Service => Credentials::Service {
                    user: upstream.user.clone(),
                    password: upstream.resolve_password(&env)?,
                },
            };
            options.mode = match upstream.mode {
                UpstreamMode::Pinned => Mode::Pinned,
                UpstreamMode::Pooled => Mode::Pooled {
                    pool_size: upstream.pool_size.get(),
                },
            };
            if upstream.tls.enabled {
                let ca_file = upstream.tls.ca_file.clone().with_context(|| {
                    format!("upstream {}: tls.enabled needs tls.ca_file", upstream.name)
                })?;
                let mut tls = UpstreamTls::new(ca_file);
                tls.server_name = upstream.tls.server_name.clone();
                tls.client_cert = upstream
                    .tls
                    .cert_file
                    .clone()
                    .zip(upstream.tls.key_file.clone());
                options.tls = Some(tls);
            }
            options.connect_timeout = upstream.connect_timeout.get();
            options.query_timeout = upstream.query_timeout.get();
            options.queue_timeout = upstream.queue_timeout.get();
            options.max_reply_bytes = upstream.max_reply_bytes.get() as u64;
            options.health_interval = upstream.health_interval.get();
            options.health_query = upstream.health_query.clone();
            options.wrap = upstream.wrap.clone();
            Ok(options)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(GatewayOptions::new(upstreams)))
}

#[cfg(test)]
mod tests {
    use qgate_config::Upstream;

    use super::*;

    /// The config crate repeats the gateway's defaults, because it may not depend on the gateway:
    /// they must stay equal.
    #[test]
    fn defaults_match_the_gateway() {
        assert_eq!(
            Upstream::DEFAULT_CONNECT_TIMEOUT,
            UpstreamOptions::DEFAULT_CONNECT_TIMEOUT
        );
        assert_eq!(
            Upstream::DEFAULT_QUERY_TIMEOUT,
            UpstreamOptions::DEFAULT_QUERY_TIMEOUT
        );
        assert_eq!(
            Upstream::DEFAULT_QUEUE_TIMEOUT,
            UpstreamOptions::DEFAULT_QUEUE_TIMEOUT
        );
        assert_eq!(
            Upstream::DEFAULT_MAX_REPLY_BYTES as u64,
            UpstreamOptions::DEFAULT_MAX_REPLY_BYTES
        );
        assert_eq!(
            Upstream::DEFAULT_POOL_SIZE,
            UpstreamOptions::DEFAULT_POOL_SIZE
        );
        assert_eq!(
            Upstream::DEFAULT_HEALTH_INTERVAL,
            UpstreamOptions::DEFAULT_HEALTH_INTERVAL
        );
        assert_eq!(
            Upstream::DEFAULT_HEALTH_QUERY,
            UpstreamOptions::DEFAULT_HEALTH_QUERY
        );
        let config = Config::from_toml_str("[[upstream]]\nname = \"rdb\"\nservers = [\"h:1\"]\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let options = gateway_options(&config, |_| None)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("an upstream is configured"));
        let mut expect = UpstreamOptions::new(
            "rdb",
            vec![ServerAddress::parse("h:1").unwrap_or_else(|e| panic!("{e}"))],
        );
        expect.credentials = Credentials::Service {
            user: String::new(),
            password: None,
        };
        assert_eq!(options.upstreams, vec![expect]);
    }

    #[test]
    fn options_from_config() {
        let config = Config::from_toml_str(
            r#"
            [[upstream]]
            name = "rdb"
            servers = ["rdb1:5010", "rdb2:5010"]
            user = "qgate"
            password_env = "RDB_PW"
            mode = "pooled"
            pool_size = 2
            query_timeout = "off"
            max_reply_bytes = "1MiB"
            wrap = ".gw.execas"

            [[upstream]]
            name = "hdb"
            servers = ["hdb:5012"]
            credentials = "passthrough"
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let env = |name: &str| (name == "RDB_PW").then(|| "s3cret".to_owned());
        let options = gateway_options(&config, env)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("upstreams are configured"));
        let rdb = &options.upstreams[0];
        assert_eq!(rdb.servers.len(), 2);
        assert_eq!(rdb.mode, Mode::Pooled { pool_size: 2 });
        assert_eq!(
            rdb.credentials,
            Credentials::Service {
                user: "qgate".into(),
                password: Some("s3cret".into())
            }
        );
        assert_eq!(rdb.query_timeout, None);
        assert_eq!(rdb.max_reply_bytes, 1 << 20);
        assert_eq!(rdb.wrap.as_deref(), Some(".gw.execas"));
        assert_eq!(options.upstreams[1].credentials, Credentials::Passthrough);
        let error = gateway_options(&config, |_| None).unwrap_err();
        assert!(error.to_string().contains("RDB_PW"), "{error}");
    }
}
