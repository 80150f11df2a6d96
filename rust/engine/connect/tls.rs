//! TLS of every connection of the engine: libpq's `sslmode` and
//! `sslrootcert`, with the meanings libpq gives them, through rustls.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, and leaves
//! checking the certificate to the connector. Here the mode decides what the
//! connector checks: nothing (`prefer`, `require`), the chain (`verify-ca`,
//! and `require` when a root file exists, as libpq does), or the chain and
//! the host name (`verify-full`). Refusals say which check failed.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::engine::error::EngineError;

/// The connector every connection of the engine goes through.
pub(crate) type Connector = MakeRustlsConnect;

/// libpq's default root file, under the home directory.
const DEFAULT_ROOT_FILE: &str = ".postgresql/root.crt";

/// The value of `sslrootcert` that names the operating system's roots (libpq 16).
const SYSTEM: &str = "system";

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    const ALL: [SslMode; 5] = [
        SslMode::Disable,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    pub(super) fn parse(value: &str) -> Result<SslMode, EngineError> {
        SslMode::ALL
            .into_iter()
            .find(|mode| mode.name() == value)
            .ok_or_else(|| {
                let shown: String = value.chars().take(40).collect();
                EngineError::InvalidDsn(format!(
                    "sslmode {shown:?} is not one of disable, prefer, require, verify-ca, verify-full"
                ))
            })
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres is told: whether to ask for TLS, and whether to
    /// go on without it. Checking the certificate is the connector's job.
    pub(super) fn driver(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        }
    }
}

/// What the server's certificate is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Check {
    /// Encryption only: any certificate is accepted.
    Nothing,
    /// Signed by one of the roots; any host name.
    Chain,
    /// Signed by one of the roots and valid for the host connected to.
    ChainAndName,
}

/// Where the trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Roots {
    File(PathBuf),
    System,
}

impl fmt::Display for Roots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Roots::File(path) => write!(f, "{}", path.display()),
            Roots::System => f.write_str("the operating system's trusted roots (sslrootcert=system)"),
        }
    }
}

/// The TLS decisions for one DSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Plan {
    pub mode: SslMode,
    pub check: Check,
    /// None when nothing is checked.
    pub roots: Option<Roots>,
}

/// Decides, as libpq does, from `sslmode` and `sslrootcert` (each from the
/// DSN or the environment): `home` is the home directory, `exists` tells
/// whether a file exists (a parameter, for tests).
pub(super) fn plan(
    mode: Option<&str>,
    rootcert: Option<&str>,
    home: Option<&Path>,
    exists: impl Fn(&Path) -> bool,
) -> Result<Plan, EngineError> {
    let mode = mode.map(SslMode::parse).transpose()?;
    if rootcert == Some(SYSTEM) {
        // libpq 16: the system's roots make verify-full the default, and
        // anything weaker an error (it would trust every public CA's
        // certificate for any host name, or check nothing at all).
        return match mode.unwrap_or(SslMode::VerifyFull) {
            SslMode::VerifyFull => Ok(Plan {
                mode: SslMode::VerifyFull,
                check: Check::ChainAndName,
                roots: Some(Roots::System),
            }),
            weaker => Err(EngineError::Tls(format!(
                "sslrootcert=system needs sslmode=verify-full (as in libpq), not sslmode={}: the \
                 system's roots trust any public CA, so only a host name check makes them mean \
                 something. Drop sslmode, or give a CA file as sslrootcert",
                weaker.name()
            ))),
        };
    }
    let mode = mode.unwrap_or(SslMode::Prefer);
    let file = match rootcert {
        Some(path) => Some(PathBuf::from(path)),
        None => home.map(|home| home.join(DEFAULT_ROOT_FILE)),
    };
    let found = file.filter(|path| exists(path));
    let nothing = Plan {
        mode,
        check: Check::Nothing,
        roots: None,
    };
    let (check, roots) = match (mode, found) {
        (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => return Ok(nothing),
        // libpq: with a root file, require checks the chain as verify-ca does.
        (SslMode::Require | SslMode::VerifyCa, Some(path)) => (Check::Chain, Roots::File(path)),
        (SslMode::VerifyFull, Some(path)) => (Check::ChainAndName, Roots::File(path)),
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => return Err(no_root_file(mode, rootcert, home)),
    };
    Ok(Plan {
        mode,
        check,
        roots: Some(roots),
    })
}

/// verify-ca or verify-full without roots to verify against.
fn no_root_file(mode: SslMode, rootcert: Option<&str>, home: Option<&Path>) -> EngineError {
    let looked_for = match (rootcert, home) {
        (Some(path), _) => format!("the root certificate file {path} (sslrootcert) does not exist"),
        (None, Some(home)) => format!(
            "no root certificate file: {} does not exist",
            home.join(DEFAULT_ROOT_FILE).display()
        ),
        (None, None) => format!("no root certificate file: no home directory to find ~/{DEFAULT_ROOT_FILE} in"),
    };
    EngineError::Tls(format!(
        "sslmode={} verifies the server's certificate, but {looked_for}. Give the CA certificate \
         that signed the server's (sslrootcert=/path/to/ca.pem, or $PGSSLROOTCERT), use \
         sslrootcert=system for the operating system's trusted roots, or a weaker sslmode \
         (require: encrypted, not verified)",
        mode.name()
    ))
}

/// The connector for a plan: reads the roots now, once.
pub(super) fn connector(plan: &Plan) -> Result<Connector, EngineError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match &plan.roots {
        None => RootCertStore::empty(),
        Some(roots) => load(roots)?,
    };
    let verifier = Verifier {
        check: plan.check,
        mode: plan.mode,
        roots: Arc::new(roots),
        described: plan.roots.as_ref().map(ToString::to_string).unwrap_or_default(),
        algorithms: provider.signature_verification_algorithms,
    };
    let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| EngineError::Tls(format!("cannot set TLS up: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// The trusted roots, or an error naming the file and what is wrong with it.
fn load(roots: &Roots) -> Result<RootCertStore, EngineError> {
    let certs: Vec<CertificateDer<'static>> = match roots {
        Roots::File(path) => {
            let unreadable = |e: &dyn fmt::Display| {
                EngineError::Tls(format!(
                    "cannot read the root certificate file {} (sslrootcert): {e}",
                    path.display()
                ))
            };
            CertificateDer::pem_file_iter(path)
                .map_err(|e| unreadable(&e))?
                .collect::<Result<_, _>>()
                .map_err(|e| unreadable(&e))?
        }
        Roots::System => rustls_native_certs::load_native_certs().certs,
    };
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(EngineError::Tls(format!(
            "no usable CA certificate in {roots}: expected PEM blocks \"-----BEGIN CERTIFICATE-----\""
        )));
    }
    Ok(store)
}

/// Checks the server's certificate as the plan says.
#[derive(Debug)]
struct Verifier {
    check: Check,
    mode: SslMode,
    roots: Arc<RootCertStore>,
    /// The roots, for messages.
    described: String,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Verifier {
    /// A refusal that names the check that failed, and the way out.
    fn refusal(&self, err: &rustls::Error, server_name: &ServerName<'_>) -> rustls::Error {
        let mode = match self.mode {
            // libpq's rule, easily forgotten: say why require checks anything.
            SslMode::Require => "require (as verify-ca, since a root file exists)",
            other => other.name(),
        };
        let message = match err {
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => {
                let presented = match err {
                    rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                        presented, ..
                    }) if !presented.is_empty() => {
                        let names: Vec<&str> = presented.iter().map(|name| unquote(name)).collect();
                        format!(" (it is for {})", names.join(", "))
                    }
                    _ => String::new(),
                };
                format!(
                    "the server's certificate is not valid for host '{}'{presented}; sslmode={mode} \
                     checks the host name: connect with a name the certificate holds, or use \
                     sslmode=verify-ca to check the CA only",
                    server_name.to_str()
                )
            }
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
                "the server's certificate is not signed by a CA in {} (sslmode={mode} checks it): \
                 give the CA that signed it with sslrootcert=/path/to/ca.pem",
                self.described
            ),
            other => format!(
                "the server's certificate was refused ({other}); sslmode={mode} checks it against {}",
                self.described
            ),
        };
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refusal(message)))))
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.check == Check::Nothing {
            return Ok(ServerCertVerified::assertion());
        }
        let verified = ParsedCertificate::try_from(end_entity).and_then(|cert| {
            verify_server_cert_signed_by_trust_anchor(&cert, &self.roots, intermediates, now, self.algorithms.all)?;
            if self.check == Check::ChainAndName {
                verify_server_name(&cert, server_name)?;
            }
            Ok(())
        });
        match verified {
            Ok(()) => Ok(ServerCertVerified::assertion()),
            Err(err) => Err(self.refusal(&err, server_name)),
        }
    }

    // The handshake's signatures are always checked (they prove the server
    // holds the certificate's key), whatever the mode.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `x` out of rustls's `DnsName("x")`; anything else as it is.
fn unquote(name: &str) -> &str {
    match (name.find('"'), name.rfind('"')) {
        (Some(first), Some(last)) if first < last => &name[first + 1..last],
        _ => name,
    }
}

/// A certificate refused by `Verifier`, with the message for the user.
#[derive(Debug)]
struct Refusal(String);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

/// What tokio-postgres says when the server answers a TLS request with no.
const NO_TLS: &str = "server does not support TLS";

/// A TLS failure in a connection error, explained; None for other failures.
pub(super) fn explain(err: &tokio_postgres::Error) -> Option<String> {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if cause.to_string() == NO_TLS {
            return Some(
                "the server does not accept TLS connections, and the sslmode asked for \
                 (require, verify-ca or verify-full) needs them: turn ssl on in the server, or use \
                 sslmode=prefer or disable"
                    .to_owned(),
            );
        }
        let rustls_error = cause
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        if let Some(tls) = rustls_error {
            if let rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(other))) = tls {
                if let Some(refusal) = other.downcast_ref::<Refusal>() {
                    return Some(refusal.0.clone());
                }
            }
            return Some(format!("the TLS handshake failed: {tls}"));
        }
        source = cause.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: &str = "/home/u";

    fn decide(mode: Option<&str>, rootcert: Option<&str>, existing: &[&str]) -> Result<Plan, EngineError> {
        plan(mode, rootcert, Some(Path::new(HOME)), |path| {
            existing.iter().any(|e| Path::new(e) == path)
        })
    }

    const DEFAULT_ROOT: &str = "/home/u/.postgresql/root.crt";

    #[test]
    fn modes_parse_as_libpq_names_them() {
        for mode in SslMode::ALL {
            assert_eq!(SslMode::parse(mode.name()).unwrap(), mode);
        }
        let err = SslMode::parse("verify_full").unwrap_err();
        assert!(matches!(err, EngineError::InvalidDsn(_)));
        let text = err.to_string();
        assert!(
            text.contains("disable, prefer, require, verify-ca, verify-full"),
            "{text}"
        );
    }

    #[test]
    fn prefer_is_the_default_and_checks_nothing() {
        let plan = decide(None, None, &[DEFAULT_ROOT]).unwrap();
        assert_eq!((plan.mode, plan.check), (SslMode::Prefer, Check::Nothing));
        assert_eq!(plan.mode.driver(), tokio_postgres::config::SslMode::Prefer);
    }

    #[test]
    fn require_checks_the_chain_only_when_a_root_file_exists() {
        let plan = decide(Some("require"), None, &[]).unwrap();
        assert_eq!((plan.check, plan.roots), (Check::Nothing, None));
        let plan = decide(Some("require"), None, &[DEFAULT_ROOT]).unwrap();
        assert_eq!(plan.check, Check::Chain);
        assert_eq!(plan.roots, Some(Roots::File(DEFAULT_ROOT.into())));
        let plan = decide(Some("require"), Some("/ca.pem"), &["/ca.pem"]).unwrap();
        assert_eq!(plan.roots, Some(Roots::File("/ca.pem".into())));
        assert_eq!(plan.mode.driver(), tokio_postgres::config::SslMode::Require);
    }

    #[test]
    fn verify_modes_check_chain_and_name() {
        let plan = decide(Some("verify-ca"), Some("/ca.pem"), &["/ca.pem"]).unwrap();
        assert_eq!(plan.check, Check::Chain);
        let plan = decide(Some("verify-full"), None, &[DEFAULT_ROOT]).unwrap();
        assert_eq!(plan.check, Check::ChainAndName);
        assert_eq!(plan.mode.driver(), tokio_postgres::config::SslMode::Require);
    }

    #[test]
    fn verify_modes_without_a_root_file_say_what_was_looked_for() {
        let text = decide(Some("verify-full"), None, &[]).unwrap_err().to_string();
        assert!(text.contains(DEFAULT_ROOT), "{text}");
        assert!(text.contains("sslrootcert=system"), "{text}");
        let text = decide(Some("verify-ca"), Some("/etc/ca.pem"), &[])
            .unwrap_err()
            .to_string();
        assert!(text.contains("/etc/ca.pem"), "{text}");
        let text = plan(Some("verify-ca"), None, None, |_| true).unwrap_err().to_string();
        assert!(text.contains("no home directory"), "{text}");
    }

    #[test]
    fn system_roots_mean_verify_full_and_refuse_weaker_modes() {
        let plan = decide(None, Some("system"), &[]).unwrap();
        assert_eq!(
            (plan.mode, plan.check, plan.roots),
            (SslMode::VerifyFull, Check::ChainAndName, Some(Roots::System))
        );
        for weaker in ["disable", "prefer", "require", "verify-ca"] {
            let err = decide(Some(weaker), Some("system"), &[]).unwrap_err();
            assert!(matches!(err, EngineError::Tls(_)), "{weaker}");
            assert!(err.to_string().contains(&format!("not sslmode={weaker}")), "{err}");
        }
    }

    #[test]
    fn a_root_file_without_certificates_is_refused() {
        let path = std::env::temp_dir().join(format!("durable-empty-root-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = connector(&Plan {
            mode: SslMode::VerifyCa,
            check: Check::Chain,
            roots: Some(Roots::File(path.clone())),
        })
        .err()
        .unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(err.to_string().contains("no usable CA certificate"), "{err}");
    }
}
