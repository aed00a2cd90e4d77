//! Where connections come from: a unix socket path, a TCP address, an
//! inherited descriptor (fd 0 = `FCGI_LISTENSOCK_FILENO` from mod_fcgid,
//! lighttpd, spawn-fcgi; fd 3+ from systemd socket activation).

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener as StdTcpListener, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

/// What to listen on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindTarget {
    /// Started by a process manager: systemd's `LISTEN_FDS` (fd 3), else fd 0
    /// when it is a listening socket (spec §2.2, `FCGI_LISTENSOCK_FILENO`).
    Auto,
    /// A unix socket path; a leading `@` names an abstract socket (Linux).
    Unix(PathBuf),
    /// `host:port`; the host may be a name, an IPv4 or an IPv6 address.
    Tcp(String, u16),
    /// An already listening socket descriptor.
    Fd(RawFd),
}

/// Options for a socket this process binds (the `socket` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOptions {
    /// The listen backlog (php-fpm's `listen.backlog`); the kernel caps it
    /// at `net.core.somaxconn`.
    pub backlog: u32,
    /// Permission bits for a unix socket file (default 0o660: the web
    /// server's group can connect, others cannot).
    pub mode: u32,
    /// Process umask applied around `bind()` (flup's `umask`), if any.
    pub umask: Option<u32>,
    /// Owner (uid) and group (gid) to give the socket file (php-fpm's
    /// `listen.owner`/`listen.group`), if any.
    pub owner: Option<u32>,
    pub group: Option<u32>,
}

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions { backlog: 1024, mode: 0o660, umask: None, owner: None, group: None }
    }
}

/// A bind target that cannot be used, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{path} is in use: a server already answers there (stop it first, or choose another path)")]
    InUse { path: String },
    #[error("{path} exists and is not a socket; refusing to replace it (remove it or choose another path)")]
    NotASocket { path: String },
    #[error("cannot bind {what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("fd {fd} is not a listening socket ({why})")]
    NotListening { fd: RawFd, why: String },
    #[error(
        "no bind address given and fd 0 is not a listening socket, so oxfcgi was not started by a FastCGI \
         process manager (Apache mod_fcgid, lighttpd bin-path, spawn-fcgi, systemd socket activation). \
         To run it yourself, give an address: oxfcgi serve app:application --bind unix:/run/app.sock \
         (or --bind 127.0.0.1:9000; in Python: run(app, bind=\"127.0.0.1:9000\"))"
    )]
    NotStartedByManager,
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("FCGI_WEB_SERVER_ADDRS: {0:?} is not an IP address")]
    WebServerAddrs(String),
}

/// A listening socket, ready to hand to the runtime.
#[derive(Debug)]
pub enum Bound {
    /// `backlog`: what this process set (None for an inherited socket).
    Unix {
        listener: StdUnixListener,
        cleanup: Option<SocketFile>,
        backlog: Option<u32>,
    },
    Tcp {
        listener: StdTcpListener,
        allowed: Option<Vec<IpAddr>>,
        backlog: Option<u32>,
    },
}

/// A socket file we created, removed again when the server stops, unless
/// another process has replaced it in the meantime.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if meta.dev() == self.dev && meta.ino() == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

impl Bound {
    /// A description for log lines: `unix:/run/app.sock`, `tcp:127.0.0.1:9000`.
    pub fn describe(&self) -> String {
        match self {
            Bound::Unix { listener, .. } => match listener.local_addr() {
                Ok(a) => match (a.as_pathname(), std::os::linux::net::SocketAddrExt::as_abstract_name(&a)) {
                    (Some(p), _) => format!("unix:{}", p.display()),
                    (None, Some(name)) => format!("unix:@{}", String::from_utf8_lossy(name)),
                    _ => "unix:(unnamed)".to_string(),
                },
                Err(_) => "unix:?".to_string(),
            },
            Bound::Tcp { listener, .. } => match listener.local_addr() {
                Ok(a) => format!("tcp:{a}"),
                Err(_) => "tcp:?".to_string(),
            },
        }
    }
}

/// The peers FCGI_WEB_SERVER_ADDRS allows (spec §3.2), `None` when unset.
pub fn web_server_addrs(value: Option<&str>) -> Result<Option<Vec<IpAddr>>, BindError> {
    let Some(value) = value else { return Ok(None) };
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        out.push(item.parse::<IpAddr>().map_err(|_| BindError::WebServerAddrs(item.to_string()))?);
    }
    Ok(Some(out))
}

/// Whether `peer` may connect given FCGI_WEB_SERVER_ADDRS (IPv4-mapped IPv6
/// addresses compare as IPv4).
pub fn peer_allowed(allowed: &Option<Vec<IpAddr>>, peer: &SocketAddr) -> bool {
    let Some(list) = allowed else { return true };
    let ip = match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    list.contains(&ip)
}

/// Open the listening socket for `target`. `allowed` is the parsed
/// FCGI_WEB_SERVER_ADDRS, applied to TCP listeners only.
pub fn bind(target: &BindTarget, opts: SocketOptions, allowed: Option<Vec<IpAddr>>) -> Result<Bound, BindError> {
    match target {
        BindTarget::Unix(path) => bind_unix(path, opts),
        BindTarget::Tcp(host, port) => bind_tcp(host, *port, opts.backlog, allowed),
        BindTarget::Fd(fd) => adopt_fd(*fd, allowed),
        BindTarget::Auto => match systemd_fd() {
            Some(fd) => adopt_fd(fd, allowed),
            None => match listening_kind(0) {
                Ok(_) => adopt_fd(0, allowed),
                Err(_) => Err(BindError::NotStartedByManager),
            },
        },
    }
}

/// fd 3 when systemd passed sockets to this process (sd_listen_fds(3)).
fn systemd_fd() -> Option<RawFd> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.trim().parse().ok()?;
    let fds: u32 = std::env::var("LISTEN_FDS").ok()?.trim().parse().ok()?;
    (pid == std::process::id() && fds >= 1).then_some(3)
}

/// The address family of a listening socket, or why it is not one.
fn listening_kind(fd: RawFd) -> Result<libc::c_int, String> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`.
    let rc = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN, (&mut value as *mut libc::c_int).cast(), &mut len)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error().to_string());
    }
    if value == 0 {
        return Err("it is a connected socket, not a listening one".to_string());
    }
    let mut domain: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: as above.
    let rc = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_DOMAIN, (&mut domain as *mut libc::c_int).cast(), &mut len)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error().to_string());
    }
    Ok(domain)
}

fn adopt_fd(fd: RawFd, allowed: Option<Vec<IpAddr>>) -> Result<Bound, BindError> {
    let domain = listening_kind(fd).map_err(|why| BindError::NotListening { fd, why })?;
    // SAFETY: `fd` is an open listening socket (checked above) that the
    // caller hands over to us; from here on we own and close it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let io_err = |source| BindError::Io { what: format!("fd {fd}"), source };
    set_cloexec_nonblocking(owned.as_raw_fd()).map_err(io_err)?;
    Ok(match domain {
        libc::AF_UNIX => Bound::Unix { listener: StdUnixListener::from(owned), cleanup: None, backlog: None },
        libc::AF_INET | libc::AF_INET6 => Bound::Tcp { listener: StdTcpListener::from(owned), allowed, backlog: None },
        other => return Err(BindError::NotListening { fd, why: format!("unsupported address family {other}") }),
    })
}

fn set_cloexec_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain fcntl calls on a descriptor we own.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl < 0 || libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
        let fdfl = libc::fcntl(fd, libc::F_GETFD);
        if fdfl < 0 || libc::fcntl(fd, libc::F_SETFD, fdfl | libc::FD_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn bind_unix(path: &Path, opts: SocketOptions) -> Result<Bound, BindError> {
    let shown = path.display().to_string();
    let io_err = |source| BindError::Io { what: format!("unix:{shown}"), source };
    let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None).map_err(io_err)?;
    let abstract_name = path.to_str().and_then(|s| s.strip_prefix('@'));
    if let Some(name) = abstract_name {
        // socket2 treats a path starting with NUL as an abstract name.
        let mut raw = vec![0u8];
        raw.extend_from_slice(name.as_bytes());
        let addr = SockAddr::unix(std::ffi::OsStr::from_bytes(&raw)).map_err(io_err)?;
        socket.bind(&addr).map_err(io_err)?;
        socket.listen(backlog(opts.backlog)).map_err(io_err)?;
        socket.set_nonblocking(true).map_err(io_err)?;
        let listener = StdUnixListener::from(OwnedFd::from(socket));
        return Ok(Bound::Unix { listener, cleanup: None, backlog: Some(opts.backlog) });
    }
    remove_stale_socket(path)?;
    let old_umask = opts.umask.map(|m| {
        // SAFETY: umask is always safe to call; it is process-wide, which is
        // why it is set only around bind() (as flup does).
        unsafe { libc::umask(m as libc::mode_t) }
    });
    let bound = SockAddr::unix(path).and_then(|addr| socket.bind(&addr));
    if let Some(old) = old_umask {
        // SAFETY: as above, restoring the previous mask.
        unsafe { libc::umask(old) };
    }
    bound.map_err(io_err)?;
    let meta = std::fs::metadata(path).map_err(io_err)?;
    let cleanup = SocketFile { path: path.to_path_buf(), dev: meta.dev(), ino: meta.ino() };
    if opts.owner.is_some() || opts.group.is_some() {
        std::os::unix::fs::chown(path, opts.owner, opts.group).map_err(io_err)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(opts.mode)).map_err(io_err)?;
    socket.listen(backlog(opts.backlog)).map_err(io_err)?;
    socket.set_nonblocking(true).map_err(io_err)?;
    let listener = StdUnixListener::from(OwnedFd::from(socket));
    Ok(Bound::Unix { listener, cleanup: Some(cleanup), backlog: Some(opts.backlog) })
}

/// Refuse a live socket or a non-socket at `path`; remove a stale socket.
fn remove_stale_socket(path: &Path) -> Result<(), BindError> {
    let shown = path.display().to_string();
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(BindError::Io { what: format!("unix:{shown}"), source }),
    };
    if !meta.file_type().is_socket() {
        return Err(BindError::NotASocket { path: shown });
    }
    match StdUnixStream::connect(path) {
        Ok(_) => Err(BindError::InUse { path: shown }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!("removing stale socket {shown} (nothing answers there)");
            std::fs::remove_file(path).map_err(|source| BindError::Io { what: format!("unix:{shown}"), source })
        }
        Err(source) => {
            Err(BindError::Io { what: format!("unix:{shown} (checking whether a server answers there)"), source })
        }
    }
}

fn bind_tcp(host: &str, port: u16, backlog_len: u32, allowed: Option<Vec<IpAddr>>) -> Result<Bound, BindError> {
    let what = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|_| BindError::Resolve(what.clone()))?
        .next()
        .ok_or_else(|| BindError::Resolve(what.clone()))?;
    let io_err = |source| BindError::Io { what: what.clone(), source };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None).map_err(io_err)?;
    socket.set_reuse_address(true).map_err(io_err)?;
    socket.bind(&addr.into()).map_err(io_err)?;
    socket.listen(backlog(backlog_len)).map_err(io_err)?;
    socket.set_nonblocking(true).map_err(io_err)?;
    Ok(Bound::Tcp { listener: StdTcpListener::from(OwnedFd::from(socket)), allowed, backlog: Some(backlog_len) })
}

/// `listen(2)`'s int (a larger value is capped by the kernel anyway).
fn backlog(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_server_addrs_parse_and_match() {
        let allowed = web_server_addrs(Some("127.0.0.1, ::1")).unwrap();
        assert!(peer_allowed(&allowed, &"127.0.0.1:5000".parse().unwrap()));
        assert!(peer_allowed(&allowed, &"[::ffff:127.0.0.1]:5000".parse().unwrap()));
        assert!(peer_allowed(&allowed, &"[::1]:5000".parse().unwrap()));
        assert!(!peer_allowed(&allowed, &"10.0.0.1:5000".parse().unwrap()));
        assert!(peer_allowed(&None, &"10.0.0.1:5000".parse().unwrap()));
        assert!(web_server_addrs(Some("localhost")).is_err());
    }

    #[test]
    fn unix_socket_lifecycle() {
        let dir = std::env::temp_dir().join(format!("oxfcgi-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let bound = bind_unix(&path, SocketOptions::default()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        // A live server answers: refuse.
        assert!(matches!(bind_unix(&path, SocketOptions::default()), Err(BindError::InUse { .. })));
        drop(bound);
        assert!(!path.exists(), "socket file removed on drop");
        // A stale socket is replaced.
        let stale = StdUnixListener::bind(&path).unwrap();
        drop(stale);
        let bound = bind_unix(&path, SocketOptions { mode: 0o600, ..SocketOptions::default() }).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        drop(bound);
        // A regular file is never replaced.
        std::fs::write(&path, b"data").unwrap();
        assert!(matches!(bind_unix(&path, SocketOptions::default()), Err(BindError::NotASocket { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), b"data");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
