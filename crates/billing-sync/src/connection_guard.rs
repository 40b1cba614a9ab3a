//! What a connection may cost before it has proved anything: every accepted connection is
//! wrapped so that no client, however many connections it opens, can make the server hold
//! memory or a connection for long without sending a whole request, nor keep real deliveries
//! out by holding every connection slot.
//!
//! poem serves HTTP/1 through hyper, whose header buffer grows to about 400 KB per connection,
//! whose header timeout needs a timer poem does not set, and whose idle timeout does not close
//! a connection whose request is half received. So the connection itself is watched:
//! - **Open connections** are capped ([`ConnectionLimits::max_connections`]). Near the cap
//!   (past nine tenths of it), each new connection closes the connection that has been idle
//!   between requests the longest, so keep-alive connections, which cost a slot and do
//!   nothing, give way to connections with a request; at the cap, the acceptor closes idle ones
//!   and waits for a slot while the kernel's backlog holds the newcomers.
//! - **One address** holds at most [`ConnectionLimits::max_per_address`] of them; its next
//!   connection is closed at once. A trusted proxy ([`TrustedProxies`]) carries many clients
//!   and is not held to it.
//! - **A request head** (the request line and headers) must end within
//!   [`ConnectionLimits::max_head_bytes`], else the client gets 431 and the connection is
//!   closed; and within [`ConnectionLimits::head_timeout`] of the accept or of the last
//!   response, else 408 and closed. Heads pipelined behind a request are counted as they
//!   arrive (the guard follows each request's `Content-Length`), so the cap holds for them too.
//! - **A silent client**: once the server has waited for the client longer than
//!   [`ConnectionLimits::idle`] (counted from the accept or the last byte written), the next
//!   read fails and the connection is dropped, whatever the request's state.
//! - **A client that does not read**: a write the socket has not taken within
//!   [`ConnectionLimits::write_timeout`] fails and the connection, with the answer it holds,
//!   is dropped. hyper answers pipelined requests one at a time, so a connection holds at most
//!   one answer.
//! - **HTTP/2 without TLS** (h2c, "prior knowledge") is refused: Stripe and Svix deliver over
//!   HTTP/1.1, and one h2c connection could otherwise open many streams at the cost of one.
//! - **The open-files limit**: an `accept` that fails for want of a file descriptor (or
//!   memory) is retried after a pause, with a warning at most every ten seconds, while the open
//!   connections are served; the oldest idle connection is closed to free a descriptor.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use billing_sync_error_body::{ErrorBody, ErrorCode};
use futures::task::AtomicWaker;
use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use poem_openapi::types::ToJSON;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::trusted_proxies::TrustedProxies;

/// What one connection may cost.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// How long the server waits for a silent client before dropping the connection.
    pub idle: Duration,
    /// How long a write may wait for a client that does not read before the connection is
    /// dropped.
    pub write_timeout: Duration,
    /// How long a request head may take to arrive, from the accept or the last response.
    pub head_timeout: Duration,
    /// The largest request head, in bytes.
    pub max_head_bytes: usize,
    /// How many connections may be open at once.
    pub max_connections: usize,
    /// How many of them one client address may hold (trusted proxies aside).
    pub max_per_address: usize,
    /// The peers that carry other clients' connections.
    pub trusted_proxies: TrustedProxies,
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

/// Past this part of the slots taken (in tenths), a new connection closes the oldest idle one.
const CROWDED_TENTHS: usize = 9;

/// How long the acceptor waits for a slot, once full, before asking another idle connection
/// to close.
const SLOT_WAIT: Duration = Duration::from_millis(100);

/// How long the acceptor pauses after an `accept` failed for want of a descriptor or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The shortest interval between two warnings about failing `accept`s.
const ACCEPT_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Wraps every connection `inner` accepts in a [`GuardedConnection`], within the limits.
pub struct GuardedAcceptor<A> {
    inner: A,
    limits: Arc<ConnectionLimits>,
    open: Arc<Semaphore>,
    table: Arc<ConnectionTable>,
    /// When the last warning about a failing `accept` was logged, and how many failed since.
    accept_failures: (Option<Instant>, u64),
}

impl<A: Acceptor> GuardedAcceptor<A> {
    /// Connections of `inner`, within `limits`.
    pub fn new(inner: A, limits: ConnectionLimits) -> Self {
        let slots = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        GuardedAcceptor {
            inner,
            limits: Arc::new(limits),
            open: Arc::new(Semaphore::new(slots)),
            table: Arc::new(ConnectionTable::default()),
            accept_failures: (None, 0),
        }
    }

    /// The next connection from `inner`; an `accept` that fails is retried, never returned:
    /// poem's server loop would ask again at once, spinning a core.
    async fn next_connection(&mut self) -> (A::Io, LocalAddr, RemoteAddr, Scheme) {
        loop {
            match self.inner.accept().await {
                Ok(accepted) => return accepted,
                Err(err) => {
                    let (last, failed) = &mut self.accept_failures;
                    *failed += 1;
                    if last.is_none_or(|at| at.elapsed() >= ACCEPT_WARNING_INTERVAL) {
                        tracing::warn!(error = %err, failed_since_last_warning = *failed,
                            open_connections = self.table.open(),
                            "cannot accept connections (at the open-files limit? raise \
                             LimitNOFILE or lower MAX_CONNECTIONS); retrying");
                        *last = Some(Instant::now());
                        *failed = 0;
                    }
                    metrics::counter!("billing_sync_accept_errors_total").increment(1);
                    // A descriptor held by an idle connection is better spent on a new one.
                    self.table.evict_oldest_idle();
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }
}

impl<A: Acceptor> Acceptor for GuardedAcceptor<A> {
    type Io = GuardedConnection<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let slot = free_slot(self.open.clone(), self.table.clone()).await?;
        loop {
            let (io, local, remote, scheme) = self.next_connection().await;
            let address = match &remote.0 {
                poem::Addr::SocketAddr(address) => Some(address.ip()),
                _ => None,
            }
            .filter(|address| !self.limits.trusted_proxies.trusts(*address));
            let Some(entry) = self.table.admit(address, self.limits.max_per_address) else {
                // The address holds its share: closed at once (dropped), the slot kept for
                // the next connection.
                metrics::counter!("billing_sync_connections_refused_total",
                    "reason" => "address share")
                .increment(1);
                drop(io);
                continue;
            };
            let slots = self.limits.max_connections;
            if (slots - self.open.available_permits()) * 10 >= slots * CROWDED_TENTHS {
                self.table.evict_oldest_idle();
            }
            metrics::gauge!("billing_sync_open_connections").increment(1.0);
            return Ok((
                GuardedConnection::new(io, self.limits.clone(), entry, slot),
                local,
                remote,
                scheme,
            ));
        }
    }
}

/// A free slot of `open`: at once if there is one, else after asking the idle connections,
/// oldest first, to close.
async fn free_slot(
    open: Arc<Semaphore>,
    table: Arc<ConnectionTable>,
) -> io::Result<OwnedSemaphorePermit> {
    loop {
        if let Ok(slot) = open.clone().try_acquire_owned() {
            return Ok(slot);
        }
        table.evict_oldest_idle();
        match tokio::time::timeout(SLOT_WAIT, open.clone().acquire_owned()).await {
            Ok(Ok(slot)) => return Ok(slot),
            Ok(Err(_)) => return Err(io::Error::other("the connection slots are closed")),
            Err(_) => continue,
        }
    }
}

/// The open connections: how many each address holds, and which are idle since when.
#[derive(Default)]
struct ConnectionTable {
    state: Mutex<TableState>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct TableState {
    open: usize,
    by_address: HashMap<IpAddr, usize>,
    /// The idle connections, oldest first.
    idle: BTreeMap<(Instant, u64), Arc<Eviction>>,
}

/// How the acceptor asks an idle connection to close.
#[derive(Default)]
struct Eviction {
    requested: AtomicBool,
    waker: AtomicWaker,
}

/// A connection's place in the table, released when the connection is dropped.
struct TableEntry {
    table: Arc<ConnectionTable>,
    id: u64,
    /// `None` for a trusted proxy or a peer without an IP address.
    address: Option<IpAddr>,
    /// Since when it has been idle, while it is.
    idle_since: Option<Instant>,
    eviction: Arc<Eviction>,
}

impl ConnectionTable {
    fn open(&self) -> usize {
        self.state.lock().expect("connection table").open
    }

    /// A place for a new connection from `address` (idle: it has sent nothing yet), unless the
    /// address holds `per_address` already.
    fn admit(self: &Arc<Self>, address: Option<IpAddr>, per_address: usize) -> Option<TableEntry> {
        let mut state = self.state.lock().expect("connection table");
        if let Some(address) = address {
            let held = state.by_address.entry(address).or_default();
            if *held >= per_address {
                return None;
            }
            *held += 1;
        }
        state.open += 1;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let eviction = Arc::new(Eviction::default());
        let now = Instant::now();
        state.idle.insert((now, id), eviction.clone());
        Some(TableEntry {
            table: self.clone(),
            id,
            address,
            idle_since: Some(now),
            eviction,
        })
    }

    /// Asks the connection idle the longest to close; it closes at its next poll.
    fn evict_oldest_idle(&self) {
        let oldest = self
            .state
            .lock()
            .expect("connection table")
            .idle
            .pop_first();
        if let Some((_, eviction)) = oldest {
            metrics::counter!("billing_sync_idle_connections_closed_total").increment(1);
            eviction.requested.store(true, Ordering::Release);
            eviction.waker.wake();
        }
    }
}

impl TableEntry {
    /// Records whether the connection is idle (between requests, nothing of the next one
    /// received).
    fn set_idle(&mut self, idle: bool) {
        if idle == self.idle_since.is_some() {
            return;
        }
        let mut state = self.table.state.lock().expect("connection table");
        match self.idle_since.take() {
            Some(since) => {
                state.idle.remove(&(since, self.id));
            }
            None => {
                let now = Instant::now();
                state.idle.insert((now, self.id), self.eviction.clone());
                self.idle_since = Some(now);
            }
        }
    }

    /// Whether the acceptor asked this connection to close while it was idle.
    fn evicted(&self) -> bool {
        self.eviction.requested.load(Ordering::Acquire)
    }
}

impl Drop for TableEntry {
    fn drop(&mut self) {
        let mut state = self.table.state.lock().expect("connection table");
        state.open -= 1;
        if let Some(since) = self.idle_since {
            state.idle.remove(&(since, self.id));
        }
        if let Some(address) = self.address
            && let Some(held) = state.by_address.get_mut(&address)
        {
            *held -= 1;
            if *held == 0 {
                state.by_address.remove(&address);
            }
        }
    }
}

/// Where a connection is in the bytes it receives.
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
    /// A body of this many bytes still to come; then the next head.
    Body(u64),
    /// A body of a length the guard does not follow (chunked): what comes next is counted
    /// from the next response on.
    Unframed,
}

impl Head {
    const START: Head = Head::Reading {
        bytes: 0,
        seen_line: false,
        line_blank: true,
    };
}

/// The framing headers of the head being read, from its lines' first bytes.
#[derive(Default)]
struct Framing {
    /// The current line's first bytes, lower-cased.
    line: Vec<u8>,
    content_length: Option<u64>,
    chunked: bool,
}

/// Enough of a header line to read `content-length: <20 digits>` or `transfer-encoding`.
const FRAMING_LINE: usize = 48;

impl Framing {
    fn push(&mut self, byte: u8) {
        if self.line.len() < FRAMING_LINE {
            self.line.push(byte.to_ascii_lowercase());
        }
    }

    /// The current line ended: note what it says of the body.
    fn end_line(&mut self) {
        if let Some(value) = self.line.strip_prefix(b"content-length:") {
            self.content_length = std::str::from_utf8(value)
                .ok()
                .and_then(|value| value.trim().parse().ok());
        } else if self.line.starts_with(b"transfer-encoding:") {
            self.chunked = true;
        }
        // Cleared, not replaced: the buffer is reused for every line of every request.
        self.line.clear();
    }

    /// What follows the head that just ended; the framing is reset for the next head.
    fn body(&mut self) -> Head {
        let (chunked, content_length) = (self.chunked, self.content_length.take());
        self.chunked = false;
        self.line.clear();
        match (chunked, content_length) {
            (true, _) => Head::Unframed,
            (false, Some(length)) if length > 0 => Head::Body(length),
            _ => Head::START,
        }
    }
}

/// A connection that refuses oversized or slow heads and h2c, fails its reads once the client
/// has kept the server waiting too long and its writes once the client has not read for too
/// long, and closes when idle if the acceptor needs its slot.
pub struct GuardedConnection<T> {
    inner: T,
    limits: Arc<ConnectionLimits>,
    /// Fires when the client has kept the server waiting past `limits.idle`.
    idle: Pin<Box<Sleep>>,
    /// Fires when the current head has taken longer than `limits.head_timeout`.
    head_deadline: Pin<Box<Sleep>>,
    /// Fires when a write has waited for the client longer than `limits.write_timeout`; armed
    /// while a write is pending.
    write_deadline: Pin<Box<Sleep>>,
    write_pending: bool,
    head: Head,
    framing: Framing,
    /// Requests whose head arrived and whose response has not been written.
    unanswered: usize,
    /// The connection's first bytes, until there are enough to tell h2c's preface (which can
    /// only come first) from an HTTP/1 request line; then `None`.
    opening: Option<Vec<u8>>,
    entry: TableEntry,
    _slot: OwnedSemaphorePermit,
}

impl<T> GuardedConnection<T> {
    fn new(
        inner: T,
        limits: Arc<ConnectionLimits>,
        entry: TableEntry,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        GuardedConnection {
            inner,
            idle: Box::pin(tokio::time::sleep(limits.idle)),
            head_deadline: Box::pin(tokio::time::sleep(limits.head_timeout)),
            write_deadline: Box::pin(tokio::time::sleep(limits.write_timeout)),
            write_pending: false,
            limits,
            head: Head::START,
            framing: Framing::default(),
            unanswered: 0,
            opening: Some(Vec::with_capacity(H2_PREFACE.len())),
            entry,
            _slot: slot,
        }
    }

    /// Between requests, with nothing of the next one received.
    fn is_idle(&self) -> bool {
        self.unanswered == 0 && self.head == Head::START
    }

    /// Follows the requests through `bytes` just read: `Err` with the answer to send when a
    /// head passes the size limit.
    fn scan(&mut self, mut bytes: &[u8]) -> Result<(), Refusal> {
        while !bytes.is_empty() {
            match self.head {
                Head::Unframed => return Ok(()),
                Head::Body(left) => {
                    let taken = (bytes.len() as u64).min(left);
                    bytes = &bytes[taken as usize..];
                    self.head = match left - taken {
                        0 => Head::START,
                        left => Head::Body(left),
                    };
                }
                Head::Reading {
                    bytes: mut count,
                    mut seen_line,
                    mut line_blank,
                } => {
                    let mut ended = None;
                    for (at, byte) in bytes.iter().enumerate() {
                        match byte {
                            b'\n' if line_blank && seen_line => {
                                ended = Some(at + 1);
                                break;
                            }
                            b'\n' if !line_blank => {
                                seen_line = true;
                                line_blank = true;
                                self.framing.end_line();
                            }
                            b'\n' | b'\r' => {}
                            byte => {
                                line_blank = false;
                                if seen_line {
                                    self.framing.push(*byte);
                                }
                            }
                        }
                        count += 1;
                        if count > self.limits.max_head_bytes {
                            return Err(Refusal::HeadTooLarge);
                        }
                    }
                    match ended {
                        Some(at) => {
                            bytes = &bytes[at..];
                            self.unanswered += 1;
                            self.head = self.framing.body();
                        }
                        None => {
                            self.head = Head::Reading {
                                bytes: count,
                                seen_line,
                                line_blank,
                            };
                            return Ok(());
                        }
                    }
                }
            }
        }
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
                ErrorCode::HeadersTooLarge,
                "The request head is over the size limit.",
            ),
            Refusal::HeadTimeout => (
                "408 Request Timeout",
                ErrorCode::HeadersTimeout,
                "The request head did not arrive in time.",
            ),
            Refusal::H2c => return None,
        };
        let body = ErrorBody::new(code, message).to_json_string();
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

    /// A write the client has not let through: an error once it has waited past the write
    /// deadline, else pending (the deadline's timer wakes the task).
    fn write_waits(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if !self.write_pending {
            self.write_pending = true;
            let deadline = Instant::now() + self.limits.write_timeout;
            self.write_deadline.as_mut().reset(deadline);
        }
        match self.write_deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                metrics::counter!("billing_sync_connections_refused_total",
                    "reason" => "answer not read in time")
                .increment(1);
                Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not read the answer in time",
                ))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Follows a write of `buf` (its first bytes, for a vectored write) that `result` says
    /// happened or waits.
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        result: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match result {
            Poll::Pending => return self.write_waits(cx).map(Err),
            Poll::Ready(Ok(n)) if n > 0 => {
                self.write_pending = false;
                let now = Instant::now();
                let idle = self.limits.idle;
                self.idle.as_mut().reset(now + idle);
                // A response (not an interim `100 Continue`, after which the body follows)
                // answers the oldest unanswered request; the next head's time counts from it.
                if buf.starts_with(b"HTTP/1.1 ") && !buf.starts_with(b"HTTP/1.1 1") {
                    self.unanswered = self.unanswered.saturating_sub(1);
                    if self.head == Head::Unframed {
                        self.head = Head::START;
                    }
                    let head_timeout = self.limits.head_timeout;
                    self.head_deadline.as_mut().reset(now + head_timeout);
                    let idle = self.is_idle();
                    self.entry.set_idle(idle);
                }
            }
            _ => {}
        }
        result
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
                let idle = self.is_idle();
                self.entry.set_idle(idle);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                // Asked to make room while idle, with nothing more received: the end of the
                // stream, which hyper answers by closing.
                self.entry.eviction.waker.register(cx.waker());
                if self.entry.evicted() && self.is_idle() {
                    return Poll::Ready(Ok(()));
                }
                if matches!(self.head, Head::Reading { .. })
                    && self.unanswered == 0
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
        self.wrote(cx, buf, result)
    }

    /// Vectored like the socket: hyper then queues an answer's body as the shared buffer it
    /// is, where without it hyper copies every body into its own write buffer (a megabyte and
    /// a half per `/docs` answer waiting for a client that does not read).
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        let first = bufs
            .iter()
            .find(|buf| !buf.is_empty())
            .map_or(&[][..], |buf| &buf[..]);
        self.wrote(cx, first, result)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.write_waits(cx).map(Err),
            done => {
                self.write_pending = false;
                done
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Pending => self.write_waits(cx).map(Err),
            done => done,
        }
    }
}

impl<T> Drop for GuardedConnection<T> {
    fn drop(&mut self) {
        metrics::gauge!("billing_sync_open_connections").decrement(1.0);
    }
}
