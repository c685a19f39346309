//! `forkswitch gen-cert <dir>`: a self-signed certificate for `localhost`
//! and `127.0.0.1` (`cert.pem`, `key.pem`), for trying TLS and WSS locally.
//! Not for production: clients must be told to trust it.

use std::path::{Path, PathBuf};

/// Writes `cert.pem` and `key.pem` into `dir` (made if missing); returns
/// their paths. The key file is readable by its owner only.
pub fn write(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let pair = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("cannot make a certificate: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, pair.cert.pem()).map_err(|e| format!("{}: {e}", cert.display()))?;
    write_private(&key, pair.key_pair.serialize_pem().as_bytes())
        .map_err(|e| format!("{}: {e}", key.display()))?;
    Ok((cert, key))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}
