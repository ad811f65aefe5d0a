//! Connecting to the source: the login, within `source.connect_timeout`; TLS (`source.tls`); and
//! the binlog stream's connection through the loopback [`relay`].
//!
//! Guarantees: a server that accepts TCP but never answers is unreachable like one that refuses
//! (the login and the settings check together must answer within the timeout); a refused login
//! names what to check, including where the password came from; a TLS failure that retrying
//! cannot fix (certificate, host name, a server without TLS, a refused client certificate) is a
//! definite error with its fix; through the relay, TLS still runs end to end and the certificate
//! must name the source's host. Every connection used for the stream has had its settings
//! checked ([`super::settings`]).

use mysql_async::prelude::Queryable;
use mysql_async::{ClientIdentity, Conn, Opts, OptsBuilder, SslOpts};

use super::error::query_error;
use super::settings::check_settings;
use super::{decode, relay, SourceError};
use crate::config::{SourceConfig, TlsMode};
use crate::flavor::Flavor;
use crate::redact::redact_url;

/// MySQL error codes that make a connection attempt definitely fail.
pub(super) const ER_ACCESS_DENIED: u16 = 1045;
const ER_DBACCESS_DENIED: u16 = 1044;
pub(super) const ER_SPECIFIC_ACCESS_DENIED: u16 = 1227;

fn classify_connect_error(
    url: &str,
    password_origin: String,
    e: mysql_async::Error,
) -> SourceError {
    let url = redact_url(url);
    if let Some(fix) = tls_failure(&e) {
        return SourceError::Tls {
            url,
            detail: e.to_string(),
            fix,
        };
    }
    match e {
        mysql_async::Error::Server(ref s)
            if s.code == ER_ACCESS_DENIED
                || s.code == ER_DBACCESS_DENIED
                || s.code == ER_SPECIFIC_ACCESS_DENIED =>
        {
            SourceError::AccessDenied {
                url,
                detail: s.message.clone(),
                check: password_origin,
            }
        }
        other => SourceError::Unreachable {
            url,
            detail: other.to_string(),
        },
    }
}

/// What to check when the source refuses the login: the user in `source.url` and the password
/// where it came from (the environment wins over `source.password_file`, which wins over the URL).
fn source_credentials(cfg: &crate::config::SourceConfig) -> String {
    if std::env::var_os("SDL_SOURCE_PASSWORD").is_some() {
        "the user in source.url and the password in the environment variable SDL_SOURCE_PASSWORD (it overrides source.password_file and the URL's password)".into()
    } else if let Some(file) = &cfg.password_file {
        format!(
            "the user in source.url and the password in source.password_file ({}), which is used instead of any password in the URL",
            file.display()
        )
    } else {
        "the user and password in source.url".into()
    }
}

/// The fix for a TLS failure that will not go away by retrying (a certificate the CA does not
/// vouch for, a wrong host name, a server without TLS, a client certificate the server refuses);
/// `None` for anything else, including a connection cut during the handshake.
fn tls_failure(e: &mysql_async::Error) -> Option<&'static str> {
    use mysql_async::{DriverError, IoError};
    const CERTIFICATE: &str = "Check that source.tls_ca_file holds the CA that signed the server's certificate and that the certificate names the host in source.url (or the name in source.tls_server_name); `openssl s_client -starttls mysql -connect HOST:PORT -CAfile CA` shows what the server presents";
    match e {
        mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer) => Some(
            "The server does not offer TLS: configure it with ssl_cert, ssl_key (and ssl_ca for client certificates), or set source.tls = \"off\"",
        ),
        mysql_async::Error::Driver(DriverError::NoKeyFound) => {
            Some("source.tls_key_file holds no private key: give the PEM key of source.tls_cert_file")
        }
        mysql_async::Error::Io(IoError::Tls(_)) => Some(CERTIFICATE),
        mysql_async::Error::Io(IoError::Io(io)) => {
            match io.get_ref()?.downcast_ref::<rustls::Error>()? {
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                    Some(CERTIFICATE)
                }
                rustls::Error::AlertReceived(_) => Some(
                    "The server refused the TLS handshake: if it requires client certificates, set source.tls_cert_file and source.tls_key_file to a certificate signed by the CA in the server's ssl_ca",
                ),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Opens a connection to the source and checks that its settings allow row-level CDC.
pub async fn connect(cfg: &SourceConfig) -> Result<(Conn, Flavor), SourceError> {
    // The login and the settings check together must answer within the timeout: a server that
    // accepts TCP but never answers is as unreachable as one that refuses.
    within_connect_timeout(cfg, async {
        let mut conn = login_now(cfg).await?;
        let flavor = check_settings(&mut conn, cfg.column_names).await?;
        Ok((conn, flavor))
    })
    .await
}

/// Opens a connection to the source without checking its settings (for `sdl check`).
pub async fn login(cfg: &SourceConfig) -> Result<Conn, SourceError> {
    within_connect_timeout(cfg, login_now(cfg)).await
}

async fn within_connect_timeout<T>(
    cfg: &SourceConfig,
    work: impl std::future::Future<Output = Result<T, SourceError>>,
) -> Result<T, SourceError> {
    match tokio::time::timeout(cfg.connect_timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(SourceError::Unreachable {
            url: redact_url(&cfg.url),
            detail: format!(
                "no answer within {:?} (source.connect_timeout)",
                cfg.connect_timeout
            ),
        }),
    }
}

async fn login_now(cfg: &SourceConfig) -> Result<Conn, SourceError> {
    let (opts, builder) = opts_builder(cfg)?;
    let builder = if cfg.tls == TlsMode::On {
        builder.ssl_opts(ssl_opts(cfg, opts.ip_or_hostname()))
    } else {
        builder
    };
    Conn::new(builder)
        .await
        .map_err(|e| classify_connect_error(&cfg.url, source_credentials(cfg), e))
}

fn opts_builder(cfg: &SourceConfig) -> Result<(Opts, OptsBuilder), SourceError> {
    let opts = Opts::from_url(&cfg.url).map_err(|e| SourceError::Unreachable {
        url: redact_url(&cfg.url),
        detail: e.to_string(),
    })?;
    let password = cfg.password().map_err(|e| SourceError::Unreachable {
        url: redact_url(&cfg.url),
        detail: e.to_string(),
    })?;
    // A replica must accept events up to 1 GiB (MySQL's replica_max_allowed_packet), whatever
    // the source's max_allowed_packet, which mysql_async would otherwise adopt as its limit: a
    // larger row change would fail to arrive at every reconnect.
    let mut builder = OptsBuilder::from_opts(opts.clone())
        .prefer_socket(false)
        .max_allowed_packet(Some(decode::MAX_EVENT_SIZE as usize));
    if let Some(password) = password {
        builder = builder.pass(Some(password));
    }
    Ok((opts, builder))
}

/// Opens the binlog connection through a [`relay::Relay`] (so that its silence can be measured
/// byte by byte) and checks the source's settings. A `socket=` URL connects directly (no relay:
/// liveness is then measured per event).
pub(super) async fn connect_for_stream(
    cfg: &SourceConfig,
) -> Result<(Conn, Flavor, Option<relay::Relay>), SourceError> {
    within_connect_timeout(cfg, async {
        let (opts, builder) = opts_builder(cfg)?;
        if opts.socket().is_some() {
            let mut conn = login_now(cfg).await?;
            let flavor = check_settings(&mut conn, cfg.column_names).await?;
            return Ok((conn, flavor, None));
        }
        let host = opts.ip_or_hostname().to_string();
        let relay = relay::Relay::start(&host, opts.tcp_port(), cfg.connect_timeout)
            .await
            .map_err(|e| SourceError::Unreachable {
                url: redact_url(&cfg.url),
                detail: e.to_string(),
            })?;
        let mut builder = builder
            .ip_or_hostname("127.0.0.1")
            .tcp_port(relay.port)
            .resolved_ips(None::<Vec<std::net::IpAddr>>);
        if cfg.tls == TlsMode::On {
            // TLS runs end to end through the relay: the certificate must still name the
            // source's host, not the loopback address the client connects to.
            builder = builder.ssl_opts(ssl_opts(cfg, &host));
        }
        let mut conn = Conn::new(builder)
            .await
            .map_err(|e| classify_connect_error(&cfg.url, source_credentials(cfg), e))?;
        let flavor = check_settings(&mut conn, cfg.column_names).await?;
        Ok((conn, flavor, Some(relay)))
    })
    .await
}

/// TLS for `source.tls = "on"`: the server's certificate must chain to `tls_ca_file` (only to it
/// when it is set, else to the built-in Mozilla roots) and name the host in `source.url`, or
/// `tls_server_name` when set; the client certificate is presented when configured.
///
/// There is no way to turn the name check off: `mysql_async` 0.37.1 ignores
/// `with_danger_skip_domain_validation` with rustls 0.23 (blackbeam/mysql_async#404), and a
/// certificate for another name is what `tls_server_name` is for.
fn ssl_opts(cfg: &SourceConfig, host: &str) -> SslOpts {
    let name = cfg
        .tls_server_name
        .clone()
        .unwrap_or_else(|| host.to_string());
    let mut ssl = SslOpts::default().with_danger_tls_hostname_override(Some(name));
    if let Some(ca) = &cfg.tls_ca_file {
        ssl = ssl
            .with_root_certs(vec![ca.clone().into()])
            .with_disable_built_in_roots(true);
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert_file, &cfg.tls_key_file) {
        ssl = ssl.with_client_identity(Some(ClientIdentity::new(
            cert.clone().into(),
            key.clone().into(),
        )));
    }
    ssl
}

/// The TLS version and cipher of a connection, or `None` when it is not encrypted.
pub async fn encryption(conn: &mut Conn) -> Result<Option<String>, SourceError> {
    let query = "SHOW SESSION STATUS WHERE Variable_name IN ('Ssl_version', 'Ssl_cipher')";
    let vars: Vec<(String, String)> = conn.query(query).await.map_err(|e| query_error(query, e))?;
    let get = |name: &str| {
        vars.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let cipher = get("Ssl_cipher");
    Ok((!cipher.is_empty()).then(|| format!("{} {cipher}", get("Ssl_version"))))
}
