//! A cap on webhook body bytes held in memory at once, so that unauthenticated clients cannot
//! exhaust memory, nor shut real deliveries out, by opening many connections.
//!
//! A body is charged for the bytes that have **arrived**, as they arrive, never for what its
//! `Content-Length` claims: a client that announces a megabyte and sends nothing holds nothing.
//! Each client address may hold at most a share of the budget, so one address cannot fill it,
//! and a part of the budget is kept for small bodies (real deliveries are a few KB), so that
//! bodies held by large deliveries do not shut small ones out. Everything is released when the
//! delivery is answered.
//!
//! [`read_body`] reads a body under these rules (a size limit, a minimum arrival rate, a
//! deadline); the webhook routes and the API's operations both read their bodies with it, each
//! from a budget of its own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The semaphores count KiB, so that any byte count that fits in memory fits their permits.
const UNIT: usize = 1024;

/// A body at most this large (by its `Content-Length`) may use the part of the budget kept
/// for small bodies.
const SMALL_BODY: usize = 64 * 1024;

/// The part of the budget only small bodies may use.
const SMALL_SHARE: usize = 8;

/// The part of the budget one client address may hold.
const ADDRESS_SHARE: usize = 4;

/// Body bytes that may be in flight at once, shared by every webhook route.
#[derive(Clone, Debug)]
pub struct BodyBudget {
    /// Units any body may take.
    shared: Arc<Semaphore>,
    /// Units only small bodies may take, once `shared` is spent.
    small: Arc<Semaphore>,
    /// Units held per client address.
    by_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// The most units one address may hold.
    address_cap: usize,
}

/// Why a body could not be charged for more bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The budget is spent.
    Spent,
    /// The client's address holds its whole share.
    AddressShare,
}

/// What one body holds of the budget, released when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: BodyBudget,
    address: Option<IpAddr>,
    small: bool,
    /// Units held: one permit per pool they came from.
    permits: Vec<OwnedSemaphorePermit>,
    units: usize,
}

impl BodyBudget {
    /// A budget of `bytes` (rounded up to whole KiB).
    pub fn new(bytes: usize) -> Self {
        let units = bytes.div_ceil(UNIT).clamp(2, Semaphore::MAX_PERMITS);
        let small = (units / SMALL_SHARE).max(1);
        BodyBudget {
            shared: Arc::new(Semaphore::new(units - small)),
            small: Arc::new(Semaphore::new(small)),
            by_address: Arc::new(Mutex::new(HashMap::new())),
            address_cap: (units / ADDRESS_SHARE).max(1),
        }
    }

    /// A charge of nothing yet for a body from `address` whose `Content-Length` says `declared`
    /// (`None`: chunked, of any size up to the limit).
    pub fn open(&self, address: Option<IpAddr>, declared: Option<usize>) -> Charge {
        Charge {
            budget: self.clone(),
            address,
            small: declared.is_some_and(|length| length <= SMALL_BODY),
            permits: Vec::new(),
            units: 0,
        }
    }
}

impl Charge {
    /// Whether the budget and the address's share have any room left: when not, the body is
    /// refused before a byte of it is read, so that the connection's buffers never fill with
    /// a body that would be refused anyway.
    pub fn has_room(&self) -> bool {
        let address_full = self.address.is_some_and(|address| {
            let held = self.budget.by_address.lock().expect("address shares");
            held.get(&address)
                .is_some_and(|units| *units >= self.budget.address_cap)
        });
        let pool_full = self.budget.shared.available_permits() == 0
            && (!self.small || self.budget.small.available_permits() == 0);
        !address_full && !pool_full
    }

    /// Charges the body for having received `bytes` in all; refused (nothing more charged)
    /// when the budget or the address's share has not that much left.
    pub fn grow_to(&mut self, bytes: usize) -> Result<(), Refused> {
        let needed = bytes.div_ceil(UNIT).saturating_sub(self.units);
        if needed == 0 {
            return Ok(());
        }
        let count = u32::try_from(needed).map_err(|_| Refused::Spent)?;
        if let Some(address) = self.address {
            let mut held = self.budget.by_address.lock().expect("address shares");
            let share = held.entry(address).or_default();
            if *share + needed > self.budget.address_cap {
                return Err(Refused::AddressShare);
            }
            *share += needed;
        }
        let acquired = self
            .budget
            .shared
            .clone()
            .try_acquire_many_owned(count)
            .or_else(|_| match self.small {
                true => self.budget.small.clone().try_acquire_many_owned(count),
                false => Err(tokio::sync::TryAcquireError::NoPermits),
            });
        let permit = match acquired {
            Ok(permit) => permit,
            Err(_) => {
                self.release_address(needed);
                return Err(Refused::Spent);
            }
        };
        self.units += needed;
        match self.permits.last_mut() {
            Some(held) if Arc::ptr_eq(held.semaphore(), permit.semaphore()) => held.merge(permit),
            _ => self.permits.push(permit),
        }
        Ok(())
    }

    fn release_address(&self, units: usize) {
        if let Some(address) = self.address {
            let mut held = self.budget.by_address.lock().expect("address shares");
            if let Some(share) = held.get_mut(&address) {
                *share = share.saturating_sub(units);
                if *share == 0 {
                    held.remove(&address);
                }
            }
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.release_address(self.units);
    }
}

/// A sender gets this long before its body must keep up [`MIN_BODY_RATE`].
const BODY_GRACE: Duration = Duration::from_secs(5);

/// The slowest a body may arrive after [`BODY_GRACE`], in bytes per second on average since
/// its head: real deliveries and API calls (a few KB) arrive in milliseconds, a trickling
/// client holding a connection is cut off.
pub const MIN_BODY_RATE: usize = 1024;

/// Why a body was not read whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// It passed the size limit (its declared or its received length).
    TooLarge,
    /// After [`BODY_GRACE`], it arrived slower than [`MIN_BODY_RATE`].
    TooSlow,
    /// It did not arrive whole within the deadline.
    Timeout,
    /// The budget, or the client address's share of it, is spent.
    Overloaded,
    /// The connection failed while it arrived.
    Unreadable,
}

/// Reads `body` whole: at most `limit` bytes, within `timeout`, at [`MIN_BODY_RATE`] after
/// [`BODY_GRACE`], each chunk charged to `charge` as it arrives. The caller holds the returned
/// charge for as long as it holds the bytes.
pub async fn read_body(
    body: poem::Body,
    limit: usize,
    timeout: Duration,
    mut charge: Charge,
) -> Result<(Vec<u8>, Charge), BodyError> {
    use futures::StreamExt;
    if !charge.has_room() {
        return Err(BodyError::Overloaded);
    }
    let started = Instant::now();
    let mut stream = std::pin::pin!(body.into_bytes_stream());
    let mut bytes = Vec::new();
    loop {
        // The next byte is due when the average rate since the head would drop under the
        // minimum, and never after the timeout.
        let rate_due =
            BODY_GRACE + Duration::from_secs_f64((bytes.len() + 1) as f64 / MIN_BODY_RATE as f64);
        let slow = rate_due < timeout;
        let due = started + if slow { rate_due } else { timeout };
        let chunk = match tokio::time::timeout_at(due, stream.next()).await {
            Err(_) if slow => return Err(BodyError::TooSlow),
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => return Ok((bytes, charge)),
            Ok(Some(Err(_))) => return Err(BodyError::Unreadable),
            Ok(Some(Ok(chunk))) => chunk,
        };
        let received = bytes.len() + chunk.len();
        if received > limit {
            return Err(BodyError::TooLarge);
        }
        charge
            .grow_to(received)
            .map_err(|_| BodyError::Overloaded)?;
        bytes.extend_from_slice(&chunk);
    }
}

/// The client's address, when the server knows it better than the connection's peer (a
/// trusted proxy named it): set as a request extension by the server's outer layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

/// The address a request's body is charged to: the one a trusted proxy named, else the
/// connection's peer.
pub fn client_address(request: &poem::Request) -> Option<IpAddr> {
    if let Some(ClientAddress(address)) = request.extensions().get::<ClientAddress>() {
        return Some(*address);
    }
    match request.remote_addr().0 {
        poem::Addr::SocketAddr(address) => Some(address.ip()),
        _ => None,
    }
}

/// The body's length as its `Content-Length` declares it, if it does.
pub fn declared_length(headers: &poem::http::HeaderMap) -> Option<u64> {
    headers
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;

    #[test]
    fn a_body_holds_only_what_has_arrived() {
        let budget = BodyBudget::new(64 * KIB);
        let mut claimed = budget.open(None, Some(1024 * KIB));
        claimed
            .grow_to(0)
            .expect("nothing arrived, nothing charged");
        let mut others: Vec<Charge> = (0..4).map(|_| budget.open(None, None)).collect();
        for other in &mut others {
            other.grow_to(10 * KIB).expect("room for what arrived");
        }
        assert_eq!(
            claimed.grow_to(20 * KIB),
            Err(Refused::Spent),
            "56 KiB shared"
        );
        drop(others);
        claimed.grow_to(50 * KIB).expect("released when dropped");
    }

    #[test]
    fn small_bodies_keep_a_reserve_that_large_ones_cannot_take() {
        let budget = BodyBudget::new(64 * KIB);
        let mut large = budget.open(None, None);
        large.grow_to(56 * KIB).expect("the shared part");
        assert_eq!(large.grow_to(57 * KIB), Err(Refused::Spent));
        let mut small = budget.open(None, Some(4 * KIB));
        small.grow_to(4 * KIB).expect("the reserve");
    }

    #[test]
    fn one_address_holds_at_most_its_share() {
        let budget = BodyBudget::new(64 * KIB);
        let attacker: IpAddr = [192, 0, 2, 1].into();
        let mut first = budget.open(Some(attacker), None);
        first.grow_to(16 * KIB).expect("a quarter");
        let mut second = budget.open(Some(attacker), None);
        assert_eq!(second.grow_to(1), Err(Refused::AddressShare));
        let mut sender = budget.open(Some([192, 0, 2, 2].into()), None);
        sender
            .grow_to(16 * KIB)
            .expect("another address has its own share");
        drop(first);
        second
            .grow_to(16 * KIB)
            .expect("the share returns when released");
    }
}
