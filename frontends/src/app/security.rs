//! `kvio serve`'s security flags, read into the sans-IO [`Security`]: the
//! secret's file (its permissions checked, as ssh checks a private key's),
//! protected mode, the TLS files and their reload on SIGHUP; and the
//! client commands' `--auth-file` and `--tls-ca`.
//!
//! The secret is read from a file, never from the command line (where
//! `ps` shows it) nor the environment (which `/proc/PID/environ` shows);
//! no message names it, only its file.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use crate::host::tls::{self, Certificates};
use crate::sansio::security::{Secret, Security, is_loopback};

/// `--protected-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtectedMode {
    /// Refuse peers outside loopback while no secret authenticates them.
    Yes,
    /// Serve whoever reaches the port.
    No,
}

/// `kvio serve`'s security options.
#[derive(Debug, Args)]
#[command(next_help_heading = "Security")]
pub struct SecurityArgs {
    /// Require this shared secret of every connection before anything else (RESP `AUTH`, kvio's `Auth` kind,
    /// memcached's `set` of `user secret`): the file's one line of printable ASCII. The file must not be readable
    /// by group or others (chmod 600), unless --auth-file-any-mode.
    #[arg(long, value_name = "PATH")]
    pub auth_file: Option<PathBuf>,
    /// Accept an --auth-file that group or others may read.
    #[arg(long, requires = "auth_file")]
    pub auth_file_any_mode: bool,
    /// With no --auth-file (nor --tls-client-ca), a listener bound outside loopback serves loopback clients only:
    /// others get one error saying why, then the close. `no` serves everyone.
    #[arg(long, value_enum, default_value = "yes")]
    pub protected_mode: ProtectedMode,
    /// Speak TLS (1.3 and 1.2) on every listener with this certificate chain (PEM, the server's first). SIGHUP
    /// reads it and --tls-key again; established connections keep theirs.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// With TLS, require of every client a certificate signed by one of these CAs (PEM); such a client is
    /// authenticated, so protected mode lets it in.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

/// What `kvio serve` was told, ready: the servers' [`Security`], and the
/// certificates to reload on SIGHUP.
#[derive(Debug)]
pub struct Secured {
    /// What every server is told.
    pub security: Security,
    /// With TLS: what SIGHUP reloads.
    pub certificates: Option<Arc<Certificates>>,
}

impl SecurityArgs {
    /// Reads the files and decides protected mode, given the addresses the
    /// listeners are bound to. An error names the file and what is wrong.
    pub fn load(&self, bound: &[IpAddr]) -> Result<Secured, String> {
        let secret = match &self.auth_file {
            Some(path) => Some(Arc::new(read_secret(path, self.auth_file_any_mode)?)),
            None => None,
        };
        let (tls, certificates) = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let certificates = Arc::new(Certificates::load(cert, key)?);
                let config = tls::server_config(certificates.clone(), self.tls_client_ca.as_deref())?;
                (Some(Arc::new(config)), Some(certificates))
            }
            _ => (None, None),
        };
        let authenticated = secret.is_some() || self.tls_client_ca.is_some();
        let exposed = bound.iter().any(|ip| !is_loopback(*ip));
        let protected = self.protected_mode == ProtectedMode::Yes && !authenticated && exposed;
        Ok(Secured { security: Security { secret, protected, tls }, certificates })
    }
}

/// The secret in `path`: refused if group or others may read the file
/// (unless `any_mode`), or if it is not one line of printable ASCII.
pub fn read_secret(path: &Path, any_mode: bool) -> Result<Secret, String> {
    let shown = path.display();
    let file = fs::File::open(path).map_err(|e| format!("--auth-file {shown}: {e}"))?;
    let mode = file.metadata().map_err(|e| format!("--auth-file {shown}: {e}"))?.permissions().mode();
    if mode & 0o077 != 0 && !any_mode {
        return Err(format!(
            "--auth-file {shown}: group or others may read it (mode {:03o}): chmod 600 {shown}, or give \
             --auth-file-any-mode",
            mode & 0o777
        ));
    }
    let contents = io::read_to_string(io::Read::take(file, 4096))
        .map_err(|e| format!("--auth-file {shown}: {e} (one line of printable ASCII expected)"))?;
    Secret::from_file_contents(contents.as_bytes()).map_err(|e| format!("--auth-file {shown}: {e}"))
}

/// The warning for a listener of `what` on `ip` outside loopback, given
/// who may talk to it; `None` on loopback, or with a secret and TLS.
pub fn exposure(what: &str, ip: IpAddr, security: &Security, protected_off: bool) -> Option<String> {
    if is_loopback(ip) {
        return None;
    }
    Some(match (&security.secret, &security.tls) {
        (Some(_), Some(_)) => return None,
        (Some(_), None) => format!(
            "{what} listens on {ip}, outside loopback: clients must show the secret (--auth-file), but it and every \
             key cross the network in the clear; add --tls-cert and --tls-key"
        ),
        (None, _) if security.protected => format!(
            "{what} listens on {ip}, outside loopback, in protected mode: only loopback clients are served, others \
             are told why and closed; give --auth-file (or --protected-mode no on a trusted network)"
        ),
        (None, _) if protected_off => format!(
            "{what} listens on {ip}, outside loopback, with --protected-mode no and no --auth-file: anyone who can \
             reach this port can read and write every key"
        ),
        // A client certificate is required (--tls-client-ca).
        (None, _) => return None,
    })
}

/// Reloads `certificates` on every SIGHUP, on a thread of its own, logging
/// what happened (a bad pair keeps the old one, and says why).
pub fn reload_on_sighup(certificates: Arc<Certificates>) -> io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    std::thread::Builder::new().name("kvio-sighup".into()).spawn(move || {
        for _ in signals.forever() {
            match certificates.reload() {
                Ok(()) => tracing::info!("SIGHUP: reloaded the TLS certificate and key"),
                Err(e) => tracing::warn!("SIGHUP: kept the TLS certificate in use: {e}"),
            }
        }
    })?;
    Ok(())
}

/// A client's TLS configuration trusting the CAs in `ca` (PEM), and the
/// name the server's certificate must carry: the host of `addr` (HOST:PORT).
pub fn client_tls(
    ca: &Path,
    addr: &str,
) -> Result<(Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>), String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        rustls::pki_types::CertificateDer::pem_file_iter(ca).map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?
    {
        let cert = cert.map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
        roots.add(cert).map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("--tls-ca {}: no CERTIFICATE in it (PEM expected)", ca.display()));
    }
    let config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("--addr {addr}: {host} is not a name TLS can check: {e}"))?;
    Ok((Arc::new(config), name))
}

#[cfg(test)]
mod test {
    use super::*;

    fn file(name: &str, contents: &str, mode: u32) -> PathBuf {
        let path = std::env::temp_dir().join(format!("kvio-secret-{name}-{}", std::process::id()));
        fs::write(&path, contents).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_secret_file_others_can_read_is_refused_and_no_error_shows_the_secret() {
        let open = file("open", "Sup3r-s3cret\n", 0o644);
        let e = read_secret(&open, false).unwrap_err();
        assert!(e.contains("chmod 600") && e.contains("644") && !e.contains("Sup3r"), "{e}");
        assert_eq!(read_secret(&open, true).unwrap().expose(), b"Sup3r-s3cret");
        let private = file("private", "Sup3r-s3cret\n", 0o600);
        assert_eq!(read_secret(&private, false).unwrap().expose(), b"Sup3r-s3cret");
        let spaced = file("spaced", "Sup3r s3cret\n", 0o600);
        let e = read_secret(&spaced, false).unwrap_err();
        assert!(e.contains("printable ASCII") && !e.contains("Sup3r"), "{e}");
        for path in [open, private, spaced] {
            let _ = fs::remove_file(path);
        }
    }

    fn args(protected: ProtectedMode, auth_file: Option<PathBuf>) -> SecurityArgs {
        SecurityArgs {
            auth_file,
            auth_file_any_mode: false,
            protected_mode: protected,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
        }
    }

    #[test]
    fn protected_mode_is_on_only_beyond_loopback_without_a_secret_and_not_turned_off() {
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(args(ProtectedMode::Yes, None).load(&[local, any]).unwrap().security.protected);
        assert!(!args(ProtectedMode::Yes, None).load(&[local]).unwrap().security.protected);
        assert!(!args(ProtectedMode::No, None).load(&[any]).unwrap().security.protected);
        let secret = file("load", "abc\n", 0o600);
        let secured = args(ProtectedMode::Yes, Some(secret.clone())).load(&[any]).unwrap();
        assert!(!secured.security.protected && secured.security.secret.is_some());
        let _ = fs::remove_file(secret);
    }
}
