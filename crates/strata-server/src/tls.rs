//! TLS: the server's certificate chain and key, read from PEM files, and the rustls acceptor
//! that runs the handshake on each accepted connection (in the connection's own task, under
//! the header-read timeout: see `conn`).
//!
//! rustls with the `ring` crypto provider; TLS 1.2 and 1.3 (rustls' safe defaults); no client
//! certificates. ALPN offers `h2` then `http/1.1`: a client that negotiates `h2` is served
//! HTTP/2, any other (including one without ALPN) HTTP/1.1.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::error::{Error, Result};

/// ALPN protocol id of HTTP/2.
pub(crate) const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol id of HTTP/1.1.
pub(crate) const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The PEM files of an HTTPS server. Both are read once, when the server binds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain: one or more `CERTIFICATE` blocks, the server's own first, then
    /// the intermediates (the root may be left out).
    pub cert: PathBuf,
    /// The private key of the first certificate: a PKCS#8 `PRIVATE KEY`, an `RSA PRIVATE KEY`
    /// (PKCS#1) or an `EC PRIVATE KEY` (SEC1) block; the first key block in the file is used.
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files `cert` and `key`.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsFiles {
        TlsFiles {
            cert: cert.into(),
            key: key.into(),
        }
    }
}

/// Reads `files` and builds the acceptor; [`Error::Tls`] names the file and what is wrong
/// with it (unreadable, no certificate or key in it, a key that does not match the
/// certificate, an algorithm rustls does not support).
pub(crate) fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor> {
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        tls_error(
            &files.key,
            match e {
                rustls::pki_types::pem::Error::NoItemsFound => {
                    "no private key in it (expected a PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or \
                     `EC PRIVATE KEY` block)"
                        .to_owned()
                }
                e => e.to_string(),
            },
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls {
            path: files.cert.clone(),
            reason: e.to_string(),
        })?
        .with_no_client_auth()
        // Checks that the key is usable and matches the first certificate.
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls {
            path: files.key.clone(),
            reason: format!(
                "the key cannot be used with the certificate of {}: {e}",
                files.cert.display()
            ),
        })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The certificates of a PEM file, in order; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_error(path, e.to_string()))?;
    if certs.is_empty() {
        return Err(tls_error(
            path,
            "no certificate in it (expected PEM `CERTIFICATE` blocks)".to_owned(),
        ));
    }
    Ok(certs)
}

fn tls_error(path: &Path, reason: String) -> Error {
    Error::Tls {
        path: path.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsFiles::new(dir.path().join("nope.pem"), dir.path().join("key.pem"));
        let e = acceptor(&missing).err().unwrap().to_string();
        assert!(e.contains("nope.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem\n").unwrap();
        let e = acceptor(&TlsFiles::new(&empty, &empty))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("empty.pem") && e.contains("no certificate"),
            "{e}"
        );
    }
}
