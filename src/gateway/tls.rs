//! TLS for the gateway's own connections out (an `https` upstream,
//! PostgreSQL, a JWKS URL): rustls with the one crypto provider (ring),
//! trusting the platform's roots and the CA certificates of a PEM file the
//! operator names (`--upstream-ca-file`, `--store-ca-file`,
//! `--jwt-jwks-ca-file`), for a server with an internal CA.

use crate::shared::regular_file::read_regular;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::Path;

/// The most a CA file may hold: a bundle of CA certificates, not a file of
/// another kind named by mistake.
pub const CA_FILE_LIMIT: u64 = 1024 * 1024;

/// The platform's roots (a certificate it cannot parse is skipped, as
/// browsers do; a platform without any gives none) and every certificate
/// in `ca_file`, which must hold at least one. Errors name the file by its
/// flag, `flag`.
pub fn roots(ca_file: Option<&Path>, flag: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for certificate in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(certificate);
    }
    let Some(path) = ca_file else {
        return Ok(roots);
    };
    for certificate in ca_certificates(path, flag)? {
        roots.add(certificate).map_err(|e| {
            format!(
                "a certificate in {flag} `{}` is not usable: {e}",
                path.display()
            )
        })?;
    }
    Ok(roots)
}

/// The certificates of the PEM file at `path` (named by its flag, `flag`,
/// in errors): a regular file of at most [`CA_FILE_LIMIT`] bytes that holds
/// at least one.
pub fn ca_certificates(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    // A regular file only: a FIFO would block start-up until written.
    let pem = read_regular(path, CA_FILE_LIMIT)
        .map_err(|e| format!("cannot read {flag} `{shown}`: {e}"))?;
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot read {flag} `{shown}`: {e}"))?;
    if certificates.is_empty() {
        return Err(format!("{flag} `{shown}` holds no PEM certificate"));
    }
    Ok(certificates)
}

/// A client configuration that verifies servers against `roots`, with ring
/// and rustls's safe default protocol versions, and no client certificate.
pub fn client_config(roots: RootCertStore) -> Result<rustls::ClientConfig, String> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(dir: &Path, text: &str) -> std::path::PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_ca_file_adds_its_certificates_to_the_platforms() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let platform = roots(None, "--upstream-ca-file").unwrap().len();
        let path = written(dir.path(), &ca.pem());
        let with_ca = roots(Some(&path), "--upstream-ca-file").unwrap();
        assert_eq!(with_ca.len(), platform + 1);
        assert!(client_config(with_ca).is_ok());
    }

    #[test]
    fn a_ca_file_without_a_usable_certificate_is_an_error_naming_its_flag() {
        let dir = tempfile::tempdir().unwrap();
        for (text, why) in [
            ("just text\n", "holds no PEM certificate"),
            (
                "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
                "cannot read --upstream-ca-file",
            ),
        ] {
            let path = written(dir.path(), text);
            let error = roots(Some(&path), "--upstream-ca-file").unwrap_err();
            assert!(error.contains(why) && error.contains("ca.pem`"), "{error}");
        }
        let missing = dir.path().join("missing.pem");
        let error = roots(Some(&missing), "--store-ca-file").unwrap_err();
        assert!(error.contains("cannot read --store-ca-file"), "{error}");
    }
}
