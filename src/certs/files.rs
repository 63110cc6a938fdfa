//! Reading PEM files and writing certificate files atomically, with errors that name the file.

use std::fs;
use std::io::BufReader;
use std::path::Path;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::CertError;

/// [`CertError::Io`] naming `path` ([`crate::fsutil::at`]).
pub(super) fn io_err(path: &Path, source: std::io::Error) -> CertError {
    crate::fsutil::at(path)(source).into()
}

pub(super) fn read_string(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| io_err(path, source))
}

pub(super) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let file = fs::File::open(path).map_err(|source| io_err(path, source))?;
    rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| io_err(path, source))
}

/// The cluster CA's certificate, `dir/ca.pem` (the first certificate in it).
///
/// Errors: [`CertError::Io`] when it cannot be read or is not PEM; [`CertError::Missing`] when
/// it holds no certificate.
pub(super) fn read_ca_cert(dir: &Path) -> Result<CertificateDer<'static>, CertError> {
    let path = dir.join(super::CA_CERT_FILE);
    read_certs(&path)?
        .into_iter()
        .next()
        .ok_or(CertError::Missing {
            path,
            expected: "certificate",
        })
}

pub(super) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let file = fs::File::open(path).map_err(|source| io_err(path, source))?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(|source| io_err(path, source))?
        .ok_or_else(|| CertError::Missing {
            path: path.to_path_buf(),
            expected: "private key",
        })
}

/// Writes `contents` to `path` atomically with Unix mode `mode` ([`crate::fsutil`]). With
/// `overwrite` false an existing `path` is an error ([`CertError::Exists`]).
pub(super) fn write_file(
    path: &Path,
    contents: &[u8],
    mode: u32,
    overwrite: bool,
) -> Result<(), CertError> {
    let options = crate::fsutil::AtomicWrite {
        mode: Some(mode),
        overwrite,
    };
    match crate::fsutil::write_atomic_with(path, contents, options) {
        Ok(()) => Ok(()),
        Err(e) if e.source.kind() == std::io::ErrorKind::AlreadyExists && e.path == path => {
            Err(CertError::Exists {
                path: path.to_path_buf(),
            })
        }
        Err(e) => Err(e.into()),
    }
}
