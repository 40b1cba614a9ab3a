//! What a connection may cost before it has proved anything: every accepted connection is
//! wrapped so that no client, however many connections it opens, can make the server hold
//! memory or a connection for long without sending a whole request.
//!
//! poem serves HTTP/1 through hyper, whose header buffer grows to about 400 KB per connection,
//! whose header timeout needs a timer poem does not set, and whose idle timeout does not close
//! a connection whose request is half received. So the connection itself is watched:
//! - **Open connections** are capped ([`ConnectionLimits::max_connections`]): past the cap the
//!   acceptor waits, and the kernel's backlog holds the newcomers.
//! - **A request head** (the request line and headers) must end within
//!   [`ConnectionLimits::max_head_bytes`], else the client gets 431 and the connection is
//!   closed; and within [`ConnectionLimits::head_timeout`] of its first byte (or of the
//!   accept, or of the last response), else 408 and closed. So a head costs at most that many
//!   bytes of buffer, for at most that long.
//! - **A silent client**: once the server has waited for the client longer than
//!   [`ConnectionLimits::idle`] (counted from the accept or the last byte written), the next
//!   read fails and the connection is dropped, whatever the request's state.
//! - **HTTP/2 without TLS** (h2c, "prior knowledge") is refused: Stripe and Svix deliver over
//!   HTTP/1.1, and one h2c connection could otherwise open many streams at the cost of one.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// What one connection may cost.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// How long the server waits for a silent client before dropping the connection.
    pub idle: Duration,
    /// How long a request head may take to arrive, from its first byte (or the accept, or the
    /// last response).
    pub head_timeout: Duration,
    /// The largest request head, in bytes.
    pub max_head_bytes: usize,
    /// How many connections may be open at once.
    pub max_connections: usize,
}

/// The largest request head accepted unless told otherwise: real webhook deliveries and API
/// calls send about 1 KB of headers (a Clerk session cookie adds 2–4 KB).
pub const DEFAULT_MAX_HEAD_BYTES: usize = 16 * 1024;
/// How long a request head may take unless told otherwise.
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The most one read takes from the socket.
const READ_CHUNK: usize = 16 * 1024;

/// The start of HTTP/2's connection preface: a client speaking h2c with prior knowledge.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Wraps every connection `inner` accepts in a [`GuardedConnection`], at most
/// `max_connections` at once.
pub struct GuardedAcceptor<A> {
    inner: A,
    limits: ConnectionLimits,
    open: Arc<Semaphore>,
}

impl<A: Acceptor> GuardedAcceptor<A> {
    /// Connections of `inner`, within `limits`.
    pub fn new(inner: A, limits: ConnectionLimits) -> Self {
        let slots = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        GuardedAcceptor {
            inner,
            limits,
            open: Arc::new(Semaphore::new(slots)),
        }
    }
}

impl<A: Acceptor> Acceptor for GuardedAcceptor<A> {
    type Io = GuardedConnection<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let slot = self
            .open
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| io::Error::other("the connection slots are closed"))?;
        let (io, local, remote, scheme) = self.inner.accept().await?;
        metrics::gauge!("billing_sync_open_connections").increment(1.0);
        Ok((
            GuardedConnection::new(io, self.limits, slot),
            local,
            remote,
            scheme,
        ))
    }
}

/// Where a connection is in its current request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Head {
    /// Reading a head: its bytes so far, whether a line of it has ended (the request line),
    /// and whether the current line is blank so far (a `\r` aside). A blank line after the
    /// first ends the head; blank lines before it are skipped, as HTTP/1.1 allows.
    Reading {
        bytes: usize,
        seen_line: bool,
        line_blank: bool,
    },
    /// The head ended: what follows is a body, until the next response.
    Ended,
}

impl Head {
    const START: Head = Head::Reading {
        bytes: 0,
        seen_line: false,
        line_blank: true,
    };
}

/// A connection that refuses oversized or slow heads and h2c, and fails its reads once the
/// client has kept the server waiting too long.
pub struct GuardedConnection<T> {
    inner: T,
    limits: ConnectionLimits,
    /// Fires when the client has kept the server waiting past `limits.idle`.
    idle: Pin<Box<Sleep>>,
    /// Fires when the current head has taken longer than `limits.head_timeout`.
    head_deadline: Pin<Box<Sleep>>,
    head: Head,
    /// The connection's first bytes, until there are enough to tell h2c's preface (which can
    /// only come first) from an HTTP/1 request line; then `None`.
    opening: Option<Vec<u8>>,
    _slot: OwnedSemaphorePermit,
}

impl<T> GuardedConnection<T> {
    fn new(inner: T, limits: ConnectionLimits, slot: OwnedSemaphorePermit) -> Self {
        GuardedConnection {
            inner,
            limits,
            idle: Box::pin(tokio::time::sleep(limits.idle)),
            head_deadline: Box::pin(tokio::time::sleep(limits.head_timeout)),
            head: Head::START,
            opening: Some(Vec::with_capacity(H2_PREFACE.len())),
            _slot: slot,
        }
    }

    /// Follows the head through `bytes` just read: `Err` with the answer to send when the
    /// head passes the size limit.
    fn scan(&mut self, bytes: &[u8]) -> Result<(), Refusal> {
        let Head::Reading {
            bytes: mut count,
            mut seen_line,
            mut line_blank,
        } = self.head
        else {
            return Ok(());
        };
        for byte in bytes {
            match byte {
                b'\n' if line_blank && seen_line => {
                    self.head = Head::Ended;
                    return Ok(());
                }
                b'\n' if !line_blank => {
                    seen_line = true;
                    line_blank = true;
                }
                b'\n' | b'\r' => {}
                _ => line_blank = false,
            }
            count += 1;
            if count > self.limits.max_head_bytes {
                return Err(Refusal::HeadTooLarge);
            }
        }
        self.head = Head::Reading {
            bytes: count,
            seen_line,
            line_blank,
        };
        Ok(())
    }
}

/// Why the guard closes a connection.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    HeadTooLarge,
    HeadTimeout,
    /// HTTP/2 without TLS: closed without an answer (an HTTP/1 one would not be read).
    H2c,
}

impl Refusal {
    /// The whole answer, its body in the documented error format; none for h2c.
    fn answer(self) -> Option<String> {
        let (status, code, message) = match self {
            Refusal::HeadTooLarge => (
                "431 Request Header Fields Too Large",
                "HEADERS_TOO_LARGE",
                "The request head is over the size limit.",
            ),
            Refusal::HeadTimeout => (
                "408 Request Timeout",
                "HEADERS_TIMEOUT",
                "The request head did not arrive in time.",
            ),
            Refusal::H2c => return None,
        };
        let body = format!(r#"{{"code":"{code}","message":"{message}"}}"#);
        Some(format!(
            "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        ))
    }

    fn reason(self) -> &'static str {
        match self {
            Refusal::HeadTooLarge => "request head over the size limit",
            Refusal::HeadTimeout => "request head not received in time",
            Refusal::H2c => "h2c",
        }
    }
}

impl<T: AsyncWrite + Unpin> GuardedConnection<T> {
    /// Counts `refusal`, writes its answer if the socket takes it now (a small answer to a
    /// socket whose buffer is empty always does), and returns the error that makes hyper drop
    /// the connection.
    fn refuse(&mut self, cx: &mut Context<'_>, refusal: Refusal) -> io::Error {
        metrics::counter!("billing_sync_connections_refused_total", "reason" => refusal.reason())
            .increment(1);
        if let Some(answer) = refusal.answer() {
            let _ = Pin::new(&mut self.inner).poll_write(cx, answer.as_bytes());
            let _ = Pin::new(&mut self.inner).poll_flush(cx);
        }
        io::Error::new(io::ErrorKind::InvalidData, refusal.reason())
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for GuardedConnection<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        // At most READ_CHUNK at a time: hyper grows its buffer only after reads that fill it,
        // so a connection streaming a body it will be refused holds little before it is.
        let polled = if buf.remaining() > READ_CHUNK {
            let mut chunk = [0u8; READ_CHUNK];
            let mut limited = ReadBuf::new(&mut chunk);
            let polled = Pin::new(&mut self.inner).poll_read(cx, &mut limited);
            buf.put_slice(limited.filled());
            polled
        } else {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        };
        match polled {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if let Some(opening) = &mut self.opening {
                    let wanted = H2_PREFACE.len() - opening.len();
                    opening.extend_from_slice(&read[..read.len().min(wanted)]);
                    if opening.len() == H2_PREFACE.len() {
                        let h2c = opening.as_slice() == H2_PREFACE;
                        self.opening = None;
                        if h2c {
                            return Poll::Ready(Err(self.refuse(cx, Refusal::H2c)));
                        }
                    }
                }
                if let Err(refusal) = self.scan(read) {
                    buf.set_filled(before);
                    return Poll::Ready(Err(self.refuse(cx, refusal)));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if matches!(self.head, Head::Reading { .. })
                    && self.head_deadline.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Err(self.refuse(cx, Refusal::HeadTimeout)));
                }
                match self.idle.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client kept the server waiting past the deadline",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            error => error,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedConnection<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            let now = Instant::now();
            let idle = self.limits.idle;
            self.idle.as_mut().reset(now + idle);
            // A response (not an interim `100 Continue`, after which the body follows) ends
            // the request: what the client sends next is the next head.
            if !buf.starts_with(b"HTTP/1.1 1") {
                self.head = Head::START;
                let head_timeout = self.limits.head_timeout;
                self.head_deadline.as_mut().reset(now + head_timeout);
            }
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T> Drop for GuardedConnection<T> {
    fn drop(&mut self) {
        metrics::gauge!("billing_sync_open_connections").decrement(1.0);
    }
}
