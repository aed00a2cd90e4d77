//! `sd_notify(3)`: tell systemd the service is ready or stopping, when it
//! asked (`NOTIFY_SOCKET`, `Type=notify`).

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Send `state` (e.g. `"READY=1"`) to `$NOTIFY_SOCKET`. `Ok(false)` when
/// systemd did not ask for notifications.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else { return Ok(false) };
    let target = target.to_string_lossy().into_owned();
    let socket = UnixDatagram::unbound()?;
    match target.strip_prefix('@') {
        Some(name) => socket.send_to_addr(state.as_bytes(), &SocketAddr::from_abstract_name(name.as_bytes())?)?,
        None => socket.send_to(state.as_bytes(), &target)?,
    };
    Ok(true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn without_notify_socket_nothing_is_sent() {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            assert!(!super::notify("READY=1").unwrap());
        }
    }
}
