//! TLS to hubs: rustls through Pingora's own acceptor, with a certificate that can be replaced
//! while the listener runs.
//!
//! [`Certificates`] resolves every handshake to the current certificate and key; a reload
//! swaps them, so new handshakes use the new pair and open connections go on. The rustls
//! configuration is this module's: TLS 1.2 and 1.3 with rustls's default cipher suites (ring),
//! ALPN `h2` (when HTTP/2 is offered) and `http/1.1`, and session resumption both ways: a cache
//! of session ids and stateless tickets. Pingora's `TlsSettings` offers neither resumption
//! knob, so the configuration is handed to Pingora's `Acceptor::from_server_config`, whose
//! `tls_handshake` the hub listener calls.

use std::fmt;
use std::sync::{Arc, RwLock};

use pingora::listeners::tls::Acceptor;
use rustls::crypto::ring;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::config::{TlsConfig, TlsKey};

/// TLS sessions kept for resumption by id: enough for a hub fleet's reconnect storm
/// (a session costs a few hundred bytes).
const SESSION_CACHE: usize = 65_536;

/// The certificate and key of the hub TLS listener, replaceable.
pub struct Certificates {
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Certificates")
    }
}

impl Certificates {
    pub fn new(config: &TlsConfig) -> Result<Certificates, String> {
        Ok(Certificates {
            current: RwLock::new(Arc::new(certified(config)?)),
        })
    }

    /// Replaces the certificate and key for the handshakes to come.
    pub fn replace(&self, config: &TlsConfig) -> Result<(), String> {
        let key = Arc::new(certified(config)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
        Ok(())
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// ring, the provider Pingora's rustls build installs (it has no aws-lc-rs, which rustls now
/// recommends for post-quantum key exchange): one provider in the process.
#[allow(deprecated)]
fn provider() -> rustls::crypto::CryptoProvider {
    ring::default_provider()
}

/// Whether the chain and key of `config` make a usable pair: the key parses and is the leaf
/// certificate's.
pub fn check(config: &TlsConfig) -> Result<(), String> {
    certified(config).map(drop)
}

fn certified(config: &TlsConfig) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = config
        .chain
        .iter()
        .map(|der| CertificateDer::from(der.clone()))
        .collect();
    let key = match &config.key {
        TlsKey::Pkcs8(der) => PrivateKeyDer::Pkcs8(der.expose().to_vec().into()),
        TlsKey::Pkcs1(der) => PrivateKeyDer::Pkcs1(der.expose().to_vec().into()),
        TlsKey::Sec1(der) => PrivateKeyDer::Sec1(der.expose().to_vec().into()),
    };
    CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| format!("the key and tls.cert_file's leaf certificate are no pair: {e}"))
}

/// The hub listener's TLS acceptor: `certificates` resolve every handshake, ALPN offers `h2`
/// when `h2` is on.
pub fn acceptor(certificates: Arc<Certificates>, h2: bool) -> Result<Acceptor, String> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    config.ticketer = ring::Ticketer::new().map_err(|e| e.to_string())?;
    config.alpn_protocols = if h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Acceptor::from_server_config(Arc::new(config)))
}
