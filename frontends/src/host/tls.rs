//! TLS certificates from files: the server's [`rustls::ServerConfig`] built
//! from PEM files (`--tls-cert`, `--tls-key`, `--tls-client-ca`), and the
//! certificate's reload (SIGHUP) without a restart.
//!
//! The configuration is built once and shared by every loop; its
//! certificate comes from [`Certificates`], a rustls certificate resolver
//! that every handshake asks for the current certificate. A reload reads
//! both files again and, only if they make a valid pair, puts the new one
//! in place: handshakes from then on use it, connections already
//! established keep theirs, none is dropped.
//!
//! What it does not own: TLS on a connection (the sans-IO
//! [`crate::sansio::tls`]), the signal (the application).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

/// The crypto provider: ring (a C compiler is all it needs: no cmake, no
/// system library), the one rustls is built with here. rustls 0.23.48
/// deprecates it for lack of post-quantum key exchange; aws-lc-rs has that,
/// and is a larger C build. TLS 1.3 with X25519 is what Redis and
/// memcached offer too.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's certificate and key, from two PEM files, reloadable.
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Certificates").field("cert", &self.cert).field("key", &self.key).finish_non_exhaustive()
    }
}

impl Certificates {
    /// Reads the chain in `cert` and its private key in `key` (PEM); an
    /// error says which file and why (never the key's bytes).
    pub fn load(cert: &Path, key: &Path) -> Result<Certificates, String> {
        let current = RwLock::new(Arc::new(read_pair(cert, key)?));
        Ok(Certificates { cert: cert.to_owned(), key: key.to_owned(), current })
    }

    /// Reads both files again: the new pair serves the handshakes from
    /// now on; on an error the old one stays (and the error says why).
    pub fn reload(&self) -> Result<(), String> {
        let pair = read_pair(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(pair);
        Ok(())
    }

    /// The certificate served now (its end entity first).
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {}: no CERTIFICATE in it (PEM expected)", path.display()));
    }
    Ok(certs)
}

fn read_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain = read_certs(cert, "--tls-cert")?;
    // The error of pki-types never quotes the file's bytes.
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {e} (a PEM private key expected)", key.display()))?;
    CertifiedKey::from_der(chain, key_der, &provider())
        .map_err(|e| format!("--tls-cert {} and --tls-key {}: {e}", cert.display(), key.display()))
}

/// The server's TLS configuration: TLS 1.3 and 1.2, the certificate from
/// `certs`, and, with `client_ca`, a client certificate signed by one of
/// its CAs required of every client.
pub fn server_config(certs: Arc<Certificates>, client_ca: Option<&Path>) -> Result<ServerConfig, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(path, "--tls-client-ca")? {
                roots.add(cert).map_err(|e| format!("--tls-client-ca {}: {e}", path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| format!("--tls-client-ca {}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(certs);
    // Redis clients and kvio's speak no ALPN; none is offered.
    config.alpn_protocols = Vec::new();
    Ok(config)
}

#[cfg(test)]
mod test {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (c, k) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, signing_key.serialize_pem()).unwrap();
        (c, k)
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kvio-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_reload_swaps_the_pair_and_a_bad_one_keeps_the_old() {
        let dir = tempdir("reload");
        let (cert, key) = write_pair(&dir, "a");
        let certs = Certificates::load(&cert, &key).unwrap();
        let first = certs.current().cert[0].clone();
        write_pair(&dir, "a");
        certs.reload().unwrap();
        let second = certs.current().cert[0].clone();
        assert_ne!(first, second, "the new certificate serves");
        // A key that is not the certificate's: refused, the old pair stays.
        let (_, other_key) = write_pair(&dir, "b");
        std::fs::copy(&other_key, &key).unwrap();
        let e = certs.reload().unwrap_err();
        assert!(e.contains("--tls-cert") && e.contains("--tls-key"), "{e}");
        assert_eq!(certs.current().cert[0], second);
        std::fs::write(&cert, "not a certificate").unwrap();
        assert!(certs.reload().unwrap_err().contains("no CERTIFICATE"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn errors_name_the_file_never_the_key() {
        let dir = tempdir("errors");
        let (cert, key) = write_pair(&dir, "a");
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nAAAA-secret-bytes\n-----END PRIVATE KEY-----\n").unwrap();
        let e = Certificates::load(&cert, &key).unwrap_err();
        assert!(e.contains(&key.display().to_string()) && !e.contains("secret-bytes"), "{e}");
        let missing = Certificates::load(&dir.join("none.crt"), &key).unwrap_err();
        assert!(missing.contains("none.crt"), "{missing}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
