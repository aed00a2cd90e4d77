//! `sd_notify(3)`: tell systemd the service is ready or stopping, when it
//! asked (`NOTIFY_SOCKET`, `Type=notify`).

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Send `state` (e.g. `"READY=1"`) to `$NOTIFY_SOCKET`. `Ok(false)` when
/// systemd did not ask for notifications.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(target) => notify_to(&target, state).map(|()| true),
        None => Ok(false),
    }
}

/// Send `state` to the datagram socket `target`: a path, or `@name` for an
/// abstract socket (what systemd puts in `NOTIFY_SOCKET`).
pub fn notify_to(target: &OsStr, state: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    match target.as_bytes().strip_prefix(b"@") {
        Some(name) => socket.send_to_addr(state.as_bytes(), &SocketAddr::from_abstract_name(name)?)?,
        None => socket.send_to(state.as_bytes(), target)?,
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;

    use super::*;

    fn received(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn a_path_and_an_abstract_name_get_the_state() {
        let dir = std::env::temp_dir().join(format!("oxfcgi-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let by_path = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1").unwrap();
        assert_eq!(received(&by_path), "READY=1");

        let name = format!("oxfcgi-notify-test-{}", std::process::id());
        let by_name = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        assert_eq!(received(&by_name), "STOPPING=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nobody_listening_is_an_error_not_a_silence() {
        let missing = std::env::temp_dir().join("oxfcgi-no-such-notify-socket");
        assert!(notify_to(missing.as_os_str(), "READY=1").is_err());
    }
}
