//! The read side of a connection looked at directly, without the runtime's
//! readiness: whether the peer sent anything we have not read, a first look
//! at a fresh connection's request that consumes nothing, and consuming it
//! once answered.
//!
//! Why look before consuming: on a unix socket, consuming the peer's bytes
//! frees room in its send buffer, and that wakes the peer if it waits for
//! EPOLLOUT, as nginx and every epoll-based client that registers both
//! directions do. With a new connection per request, the web server is then
//! woken once by our read (finding nothing to do, it sleeps again) and once
//! more by our answer: two wake-ups of an idle process per request, each
//! paid in kernel time by the thread that wakes it. Consumed after the
//! answer is written, the room it frees wakes nobody: the web server is
//! already up for the answer. uWSGI gets the same effect by answering
//! within the web server's wake-up latency.

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, Interest};

/// What the connection loop needs of its read side beyond `AsyncRead`.
pub(crate) trait Unread {
    /// True when nothing is waiting in the socket's receive buffer (or the
    /// peer has closed): a non-blocking look, which consumes nothing. False
    /// when bytes wait or it cannot tell.
    fn nothing_unread(&self) -> bool;

    /// Copy what is already waiting into `buf`'s spare capacity without
    /// waiting and without consuming it (`MSG_PEEK`): `Some(Ok(0))` at EOF,
    /// `Some(Err(WouldBlock))` when nothing is there, `None` when it cannot
    /// look directly. The bytes stay in the socket until [`Unread::discard`].
    fn peek_now(&self, buf: &mut BytesMut) -> Option<io::Result<usize>>;

    /// Consume the first `n` bytes waiting in the socket, which a
    /// [`Unread::peek_now`] already copied. An error if fewer than `n` are
    /// there (EOF first, or a read error).
    fn discard(&self, n: usize) -> io::Result<()>;

    /// Wait until the peer sends more than the first `peeked` bytes waiting
    /// in the socket, or closes its sending side: news that a request's
    /// reader must see (FCGI_ABORT_REQUEST, the web server gone), as opposed
    /// to the bytes already looked at. The runtime's readiness alone cannot
    /// tell: the socket stays readable while those bytes wait, and tokio
    /// assumes an accepted socket readable. In-memory pipes return at once.
    fn news_beyond(&self, peeked: usize) -> impl Future<Output = io::Result<()>> + Send + '_;
}

/// `recv(MSG_PEEK | MSG_DONTWAIT)` of one byte: EAGAIN or EOF means nothing unread.
fn socket_has_nothing_unread(fd: RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: reads at most one byte into a local; MSG_PEEK consumes nothing.
    let n = unsafe { libc::recv(fd, (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    n == 0 || (n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock)
}

/// `recv(MSG_PEEK | MSG_DONTWAIT)` into `buf`'s spare capacity.
fn socket_peek_now(fd: RawFd, buf: &mut BytesMut) -> io::Result<usize> {
    if buf.capacity() == buf.len() {
        buf.reserve(8192);
    }
    let spare = buf.spare_capacity_mut();
    // SAFETY: recv writes at most `spare.len()` bytes into the spare capacity.
    let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), spare.len(), libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: recv initialized the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// `recv(MSG_DONTWAIT)` of `n` bytes into a scratch buffer, until all are consumed.
fn socket_discard(fd: RawFd, mut n: usize) -> io::Result<()> {
    // Never read back, so left uninitialized (zeroing it was most of a
    // discard's instructions).
    let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
    while n > 0 {
        let want = n.min(scratch.len());
        // SAFETY: recv writes at most `want` bytes into the local buffer,
        // which nothing reads.
        let got = unsafe { libc::recv(fd, scratch.as_mut_ptr().cast(), want, libc::MSG_DONTWAIT) };
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if got == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        n -= got as usize;
    }
    Ok(())
}

/// The bytes waiting in the socket's receive buffer (`FIONREAD`, `SIOCINQ`).
fn socket_queued(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int into `n`.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

/// `Unread` for the read half of a tokio socket (unix or TCP).
///
/// [`Unread::news_beyond`]: each time the runtime reports the socket
/// readable, it is news if the peer closed its side or more than `peeked`
/// bytes wait; else the readiness is cleared (an operation that "would
/// block" clears it) and the next event awaited. [`Unread::peek_now`]
/// clears the readiness tokio assumes for an accepted socket when the look
/// saw all that waits: bytes that come later raise a new event.
macro_rules! impl_unread {
    ($half:ty, $stream:ty) => {
        impl Unread for $half {
            fn nothing_unread(&self) -> bool {
                socket_has_nothing_unread(AsRef::<$stream>::as_ref(self).as_raw_fd())
            }

            fn peek_now(&self, buf: &mut BytesMut) -> Option<io::Result<usize>> {
                let stream = AsRef::<$stream>::as_ref(self);
                let peeked = socket_peek_now(stream.as_raw_fd(), buf);
                // Only when the look saw everything that waits (it did not
                // fill the buffer): the readiness cleared may be the
                // driver's event for these very bytes, and bytes beyond
                // them would then raise no other.
                if matches!(peeked, Ok(n) if n > 0 && buf.len() < buf.capacity()) {
                    let _ = stream.try_io(Interest::READABLE, would_block);
                }
                Some(peeked)
            }

            fn discard(&self, n: usize) -> io::Result<()> {
                socket_discard(AsRef::<$stream>::as_ref(self).as_raw_fd(), n)
            }

            fn news_beyond(&self, peeked: usize) -> impl Future<Output = io::Result<()>> + Send + '_ {
                let stream = AsRef::<$stream>::as_ref(self);
                async move {
                    loop {
                        let ready = stream.ready(Interest::READABLE).await?;
                        if ready.is_read_closed() || socket_queued(stream.as_raw_fd())? > peeked {
                            return Ok(());
                        }
                        let _ = stream.try_io(Interest::READABLE, would_block);
                    }
                }
            }
        }
    };
}

/// An operation that finds nothing to do: passed to `try_io`, it clears the
/// readiness the runtime holds for the socket.
fn would_block() -> io::Result<()> {
    Err(io::ErrorKind::WouldBlock.into())
}

impl_unread!(tokio::net::unix::OwnedReadHalf, tokio::net::UnixStream);
impl_unread!(tokio::net::tcp::OwnedReadHalf, tokio::net::TcpStream);

/// In-memory pipes (unit tests, the fuzzing harness) cannot tell: they
/// linger, and read through the runtime only.
impl<T> Unread for tokio::io::ReadHalf<T> {
    fn nothing_unread(&self) -> bool {
        false
    }

    fn peek_now(&self, _: &mut BytesMut) -> Option<io::Result<usize>> {
        None
    }

    fn discard(&self, n: usize) -> io::Result<()> {
        if n == 0 {
            Ok(())
        } else {
            Err(io::Error::other("an in-memory pipe was never peeked at"))
        }
    }

    fn news_beyond(&self, _: usize) -> impl Future<Output = io::Result<()>> + Send + '_ {
        std::future::ready(Ok(()))
    }
}

/// Consume the `*peeked` bytes still in the socket, if any ([`Unread::discard`]),
/// and set `*peeked` to 0 once they are.
pub(crate) fn consume_peeked<R: Unread>(rd: &R, peeked: &mut usize) -> io::Result<()> {
    if *peeked > 0 {
        rd.discard(*peeked)?;
        *peeked = 0;
    }
    Ok(())
}

/// `rd.read_buf(buf)` for a connection whose first `*peeked` bytes are in
/// `buf` but still in the socket: once the peer sends more or closes
/// ([`Unread::news_beyond`]), they are consumed ([`Unread::discard`]) and
/// the read goes on. Cancel-safe: dropped before the discard, nothing was
/// consumed; after it, `*peeked` is 0 already.
pub(crate) async fn read_after_peek<R>(rd: &mut R, buf: &mut BytesMut, peeked: &mut usize) -> io::Result<usize>
where
    R: AsyncRead + Unread + Unpin,
{
    if *peeked > 0 {
        rd.news_beyond(*peeked).await?;
        consume_peeked(rd, peeked)?;
    }
    rd.read_buf(buf).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixStream;

    use super::*;

    const SHORT: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn a_peek_consumes_nothing_until_discarded() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let (rd, _wr) = ours.into_split();
        peer.write_all(b"0123456789").await.unwrap();
        let mut buf = BytesMut::new();
        assert_eq!(rd.peek_now(&mut buf).unwrap().unwrap(), 10);
        assert_eq!(&buf[..], b"0123456789");
        assert_eq!(socket_queued(AsRef::<UnixStream>::as_ref(&rd).as_raw_fd()).unwrap(), 10);
        assert!(!rd.nothing_unread());
        rd.discard(10).unwrap();
        assert!(rd.nothing_unread());
    }

    #[tokio::test]
    async fn a_look_that_fills_the_buffer_keeps_the_readiness() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let (rd, _wr) = ours.into_split();
        peer.write_all(b"more than eight bytes").await.unwrap();
        rd.readable().await.unwrap(); // the driver's event for them is taken
        let mut buf = BytesMut::with_capacity(8);
        let room = buf.capacity();
        assert_eq!(rd.peek_now(&mut buf).unwrap().unwrap(), room);
        tokio::time::timeout(SHORT, rd.readable()).await.expect("the rest is still to be read").unwrap();

        let (ours, mut peer) = UnixStream::pair().unwrap();
        let (rd, _wr) = ours.into_split();
        peer.write_all(b"short").await.unwrap();
        rd.readable().await.unwrap();
        let mut buf = BytesMut::with_capacity(64);
        assert_eq!(rd.peek_now(&mut buf).unwrap().unwrap(), 5);
        assert!(tokio::time::timeout(SHORT, rd.readable()).await.is_err(), "all was seen: cleared");
        peer.write_all(b"!").await.unwrap();
        tokio::time::timeout(SHORT, rd.readable()).await.expect("a new byte raises a new event").unwrap();
    }

    #[tokio::test]
    async fn discarding_more_than_waits_is_an_error() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let (rd, _wr) = ours.into_split();
        peer.write_all(b"short").await.unwrap();
        assert!(rd.discard(6).is_err(), "nothing more waits: WouldBlock");
        peer.shutdown().await.unwrap();
        assert!(rd.discard(1).is_err(), "EOF");
    }

    #[tokio::test]
    async fn news_is_more_bytes_or_the_peer_closing_not_the_peeked_ones() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let (rd, _wr) = ours.into_split();
        peer.write_all(b"request").await.unwrap();
        let mut buf = BytesMut::new();
        assert_eq!(rd.peek_now(&mut buf).unwrap().unwrap(), 7);
        assert!(tokio::time::timeout(SHORT, rd.news_beyond(7)).await.is_err(), "only the peeked bytes wait");
        peer.write_all(b"+").await.unwrap();
        tokio::time::timeout(SHORT, rd.news_beyond(7)).await.expect("a new byte is news").unwrap();

        let (ours, peer) = UnixStream::pair().unwrap();
        let (rd, _wr) = ours.into_split();
        let (_peer_rd, mut peer_wr) = peer.into_split();
        peer_wr.write_all(b"request").await.unwrap();
        let mut buf = BytesMut::new();
        assert_eq!(rd.peek_now(&mut buf).unwrap().unwrap(), 7);
        assert!(tokio::time::timeout(SHORT, rd.news_beyond(7)).await.is_err());
        peer_wr.shutdown().await.unwrap();
        tokio::time::timeout(SHORT, rd.news_beyond(7)).await.expect("the peer closing is news").unwrap();
    }

    #[tokio::test]
    async fn reading_after_a_peek_discards_the_peeked_bytes_once() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let (mut rd, _wr) = ours.into_split();
        peer.write_all(b"first").await.unwrap();
        let mut buf = BytesMut::new();
        let mut peeked = rd.peek_now(&mut buf).unwrap().unwrap();
        peer.write_all(b"second").await.unwrap();
        let n = read_after_peek(&mut rd, &mut buf, &mut peeked).await.unwrap();
        assert_eq!((n, peeked), (6, 0));
        assert_eq!(&buf[..], b"firstsecond", "no byte twice, none lost");
    }
}
