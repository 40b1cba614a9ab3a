//! A deadline on how long a connection may keep the server waiting for the client.
//!
//! poem's idle timeout does not close a connection whose request is half received (hyper
//! waits for it to finish), and hyper's own header timeout needs a timer poem does not set. So
//! each accepted connection is wrapped: once the server has been waiting for the client for
//! longer than the deadline (counted from the accept, or from the last byte the server wrote),
//! the next read fails with `TimedOut` and hyper drops the connection. That bounds a client
//! that sends nothing, one that trickles its headers a byte at a time (slow-loris), and an
//! idle keep-alive connection alike. Reads do not extend the deadline; writes do, because a
//! response means the client was served.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Wraps every connection `inner` accepts in a [`ClientDeadline`].
pub struct DeadlineAcceptor<A> {
    inner: A,
    deadline: Duration,
}

impl<A: Acceptor> DeadlineAcceptor<A> {
    /// Connections of `inner` may keep the server waiting for at most `deadline`.
    pub fn new(inner: A, deadline: Duration) -> Self {
        DeadlineAcceptor { inner, deadline }
    }
}

impl<A: Acceptor> Acceptor for DeadlineAcceptor<A> {
    type Io = ClientDeadline<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (io, local, remote, scheme) = self.inner.accept().await?;
        Ok((
            ClientDeadline::new(io, self.deadline),
            local,
            remote,
            scheme,
        ))
    }
}

/// A connection that fails its reads once the client has kept the server waiting too long.
pub struct ClientDeadline<T> {
    inner: T,
    deadline: Duration,
    timer: Pin<Box<Sleep>>,
}

impl<T> ClientDeadline<T> {
    fn new(inner: T, deadline: Duration) -> Self {
        ClientDeadline {
            inner,
            deadline,
            timer: Box::pin(tokio::time::sleep(deadline)),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client kept the server waiting past the deadline",
                ))),
                Poll::Pending => Poll::Pending,
            },
            ready => ready,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            let next = Instant::now() + self.deadline;
            self.timer.as_mut().reset(next);
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
