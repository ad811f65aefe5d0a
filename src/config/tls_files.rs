//! The TLS keys of the config: which may be set together, and that every file they name is
//! readable and usable (the checks themselves are in src/tls.rs).

use std::path::Path;

use super::{Config, ConfigError, TlsMode};

impl Config {
    /// The TLS keys: files only with `tls = "on"`, a client certificate only with its key, and
    /// every file readable and usable (src/tls.rs).
    pub(super) fn validate_tls(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        };
        let (source, sink) = (&self.source, &self.sink);
        let source_files = [
            ("source.tls_ca_file", &source.tls_ca_file),
            ("source.tls_cert_file", &source.tls_cert_file),
            ("source.tls_key_file", &source.tls_key_file),
        ];
        let sink_files = [
            ("sink.tls_ca_file", &sink.tls_ca_file),
            ("sink.tls_cert_key_file", &sink.tls_cert_key_file),
        ];
        for (mode, section, files) in [
            (source.tls, "source", &source_files[..]),
            (sink.tls, "sink", &sink_files[..]),
        ] {
            if mode == TlsMode::Off {
                if let Some((key, _)) = files.iter().find(|(_, file)| file.is_some()) {
                    return Err(invalid(
                        key,
                        format!("is set but {section}.tls is \"off\": set {section}.tls = \"on\" to use it, or remove it"),
                    ));
                }
            }
        }
        if let Some(name) = &source.tls_server_name {
            if source.tls == TlsMode::Off {
                return Err(invalid(
                    "source.tls_server_name",
                    "is set but source.tls is \"off\": set source.tls = \"on\" to use it, or remove it".into(),
                ));
            }
            if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
                return Err(invalid(
                    "source.tls_server_name",
                    format!("`{name}` is neither a DNS name nor an IP address: give the name the server's certificate carries"),
                ));
            }
        }
        for (key, file) in [source_files[0], sink_files[0]] {
            if let Some(file) = file {
                crate::tls::check_ca_file(file).map_err(|e| {
                    invalid(
                        key,
                        format!(
                            "{e}. Give the PEM file of the CA that signed the server's certificate"
                        ),
                    )
                })?;
            }
        }
        match (&source.tls_cert_file, &source.tls_key_file) {
            (Some(cert), Some(key)) => {
                crate::tls::check_client_identity(cert, key).map_err(|(part, e)| match part {
                    crate::tls::IdentityPart::Certificate => invalid(
                        "source.tls_cert_file",
                        format!("{e}. Give the PEM client certificate sdl presents to the source"),
                    ),
                    crate::tls::IdentityPart::Key => invalid(
                        "source.tls_key_file",
                        format!("{e}. Give the PEM private key of source.tls_cert_file"),
                    ),
                })?
            }
            (Some(_), None) => {
                return Err(invalid(
                    "source.tls_key_file",
                    "is missing: source.tls_cert_file needs its private key".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "source.tls_cert_file",
                    "is missing: source.tls_key_file is the key of a client certificate, which is not set".into(),
                ))
            }
            (None, None) => {}
        }
        if let Some(file) = &sink.tls_cert_key_file {
            crate::tls::check_client_identity(file, file).map_err(|(_, e)| {
                invalid(
                    "sink.tls_cert_key_file",
                    format!("{e}. Give one PEM file holding the client certificate and its private key (`cat client.crt client.key > client.pem`)"),
                )
            })?;
        }
        Ok(())
    }
}
