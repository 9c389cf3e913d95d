//! Certificates generated per test: a CA, a server certificate for
//! 127.0.0.1 and localhost, and a client certificate, all signed by the CA.

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct Pki {
    pub ca_pem: String,
    ca_der: CertificateDer<'static>,
    server: (CertificateDer<'static>, Vec<u8>),
    pub client_cert_pem: String,
    pub client_key_pem: String,
    /// The server's certificate and key, PEM.
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

impl Pki {
    pub fn new() -> Self {
        Self::for_names(&["127.0.0.1", "localhost"])
    }

    /// A PKI whose server certificate names exactly `names` (hostile names
    /// included: a certificate's names are the peer's to choose).
    pub fn for_names(names: &[&str]) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let server_key = KeyPair::generate().unwrap();
        let server =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap()
                .signed_by(&server_key, &issuer)
                .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let client = CertificateParams::new(vec!["client.test".to_owned()])
            .unwrap()
            .signed_by(&client_key, &issuer)
            .unwrap();
        Self {
            ca_pem: ca.pem(),
            ca_der: ca.der().clone(),
            server: (server.der().clone(), server_key.serialize_der()),
            server_cert_pem: server.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert_pem: client.pem(),
            client_key_pem: client_key.serialize_pem(),
        }
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A server config; with `require_client_cert`, mutual TLS.
    pub fn server_config(&self, require_client_cert: bool) -> Arc<rustls::ServerConfig> {
        let builder = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.ca_der.clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Self::provider(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server.1.clone()));
        Arc::new(
            builder
                .with_single_cert(vec![self.server.0.clone()], key)
                .unwrap(),
        )
    }

    /// A server config that offers HTTP/2 (ALPN `h2`) only.
    pub fn server_config_h2(&self) -> Arc<rustls::ServerConfig> {
        let mut config = Arc::unwrap_or_clone(self.server_config(false));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(config)
    }

    /// Writes the CA and client files into `dir`: (ca, client cert, client key).
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let paths = (
            dir.join("ca.pem"),
            dir.join("client.pem"),
            dir.join("client.key"),
        );
        std::fs::write(&paths.0, &self.ca_pem).unwrap();
        std::fs::write(&paths.1, &self.client_cert_pem).unwrap();
        std::fs::write(&paths.2, &self.client_key_pem).unwrap();
        paths
    }
}
