//! TLS for the gateway (feature `tls`): rustls with the `ring` crypto provider,
//! certificates and keys read from PEM files.
//!
//! * [`TlsServer`]: the server's certificate chain and private key
//!   ([`ServerConfig::tls`](super::ServerConfig::tls)).
//! * [`TlsClient`]: the certificate authorities a client trusts and the name it
//!   expects the server's certificate to carry
//!   ([`ClientConfig::tls`](super::ClientConfig::tls)).
//!
//! Both use rustls's safe defaults (TLS 1.2 and 1.3); the provider is passed
//! explicitly, so nothing depends on a process-wide default.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls;
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

fn read_certs(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| invalid(format!("cannot read certificates from {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(format!("{} holds no PEM certificate", path.display())));
    }
    Ok(certs)
}

/// The server's side of TLS: its certificate chain and key.
#[derive(Clone)]
pub struct TlsServer {
    acceptor: TlsAcceptor,
}

impl TlsServer {
    /// From a PEM certificate chain (the server's certificate first) and a PEM
    /// private key (PKCS#8, PKCS#1 or SEC1).
    ///
    /// # Errors
    /// `InvalidInput` naming the file that cannot be read or used.
    pub fn from_pem_files(cert_chain: impl AsRef<Path>, key: impl AsRef<Path>) -> io::Result<Self> {
        let certs = read_certs(cert_chain.as_ref())?;
        let key_path = key.as_ref();
        let key = PrivateKeyDer::from_pem_file(key_path)
            .map_err(|e| invalid(format!("cannot read a private key from {}: {e}", key_path.display())))?;
        Self::from_der(certs, key)
    }

    /// From a DER certificate chain and key already in memory.
    ///
    /// # Errors
    /// `InvalidInput` if rustls refuses the certificate or key.
    pub fn from_der(
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> io::Result<Self> {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("TLS protocol versions: {e}")))?
            .with_no_client_auth()
            .with_single_cert(cert_chain, key)
            .map_err(|e| invalid(format!("the TLS certificate or key is not usable: {e}")))?;
        Ok(Self { acceptor: TlsAcceptor::from(Arc::new(config)) })
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServer").finish_non_exhaustive()
    }
}

/// The client's side of TLS: whom it trusts, and the name it expects.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl TlsClient {
    /// Trusts the certificate authorities in a PEM file, and expects the server's
    /// certificate to be valid for `server_name` (a DNS name or an IP address).
    ///
    /// # Errors
    /// `InvalidInput` if the file or the name cannot be used.
    pub fn from_ca_file(ca: impl AsRef<Path>, server_name: &str) -> io::Result<Self> {
        Self::from_ca_der(read_certs(ca.as_ref())?, server_name)
    }

    /// Trusts the given DER certificate authorities (see
    /// [`from_ca_file`](Self::from_ca_file)).
    ///
    /// # Errors
    /// `InvalidInput` if a certificate or the name cannot be used.
    pub fn from_ca_der(cas: Vec<CertificateDer<'static>>, server_name: &str) -> io::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in cas {
            roots.add(ca).map_err(|e| invalid(format!("a CA certificate is not usable: {e}")))?;
        }
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| invalid(format!("{server_name:?} is not a server name: {e}")))?;
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("TLS protocol versions: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self { connector: TlsConnector::from(Arc::new(config)), server_name })
    }

    pub(crate) fn connector(&self) -> &TlsConnector {
        &self.connector
    }

    pub(crate) fn server_name(&self) -> ServerName<'static> {
        self.server_name.clone()
    }
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}
