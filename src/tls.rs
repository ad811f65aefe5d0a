//! TLS to the source and the sink: checks of the certificate and key files the config names.
//!
//! # Guarantees
//! - Every file named by `source.tls_*` / `sink.tls_*` is read and checked when the config is
//!   loaded, before anything connects: a CA file must hold at least one PEM certificate usable as
//!   a trust anchor; a client certificate file at least one PEM certificate; a key file a PEM
//!   private key (PKCS#8, PKCS#1 or SEC1) that belongs to that certificate. A problem is reported
//!   with the file and what to give instead (the caller adds the config key).
//! - The checks use the same rustls and ring provider as both database drivers, so a file that
//!   passes here is one the drivers can load.
//!
//! Nothing here touches the network. What TLS does at connect time (server certificate verified
//! against the CA, host name checked, client certificate presented) is set up by the stages:
//! `source::login_now` and `sink::probe`.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The PEM certificates in `path` (at least one).
fn certificates(path: &Path, data: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (a `-----BEGIN CERTIFICATE-----` block); give the \
             certificate in PEM form (from DER: `openssl x509 -inform der -in FILE.der -out FILE.pem`)",
            path.display()
        ));
    }
    Ok(certs)
}

fn private_key(path: &Path, data: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(data).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "{} holds no PEM private key (a `-----BEGIN PRIVATE KEY-----`, `RSA PRIVATE KEY` or \
             `EC PRIVATE KEY` block; an encrypted key is not supported: decrypt it with \
             `openssl pkey -in KEY -out KEY.pem`)",
            path.display()
        ),
        e => format!("{} is not valid PEM: {e}", path.display()),
    })
}

/// Checks a CA file: PEM certificates, each one usable as a trust anchor.
pub fn check_ca_file(path: &Path) -> Result<(), String> {
    let data = read(path)?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in certificates(path, &data)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            format!(
                "certificate {} in {} is not a usable CA certificate: {e}",
                i + 1,
                path.display()
            )
        })?;
    }
    Ok(())
}

/// Which file of a client identity a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityPart {
    Certificate,
    Key,
}

/// Checks a client identity: the certificate chain in `cert`, the private key in `key` (the same
/// file for MongoDB's combined certificate-and-key PEM), and that the key belongs to the
/// certificate.
pub fn check_client_identity(cert: &Path, key: &Path) -> Result<(), (IdentityPart, String)> {
    let cert_data = read(cert).map_err(|e| (IdentityPart::Certificate, e))?;
    let certs = certificates(cert, &cert_data).map_err(|e| (IdentityPart::Certificate, e))?;
    let key_data = if key == cert {
        cert_data
    } else {
        read(key).map_err(|e| (IdentityPart::Key, e))?
    };
    let private = private_key(key, &key_data).map_err(|e| (IdentityPart::Key, e))?;
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| (IdentityPart::Key, e.to_string()))?
        .with_root_certificates(RootCertStore::empty())
        .with_client_auth_cert(certs, private)
        .map_err(|e| {
            (
                IdentityPart::Key,
                format!(
                    "the private key in {} does not fit the certificate in {}: {e}; give the key \
                     the certificate was issued for",
                    key.display(),
                    cert.display()
                ),
            )
        })?;
    Ok(())
}

/// True when `path` exists and every user may read it.
pub fn world_readable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}
