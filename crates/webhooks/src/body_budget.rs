//! A global cap on webhook body bytes held in memory at once, so that unauthenticated clients
//! cannot exhaust memory by opening many connections and stalling their bodies: a delivery
//! reserves its size (its `Content-Length`, or the body limit when it has none) before a byte
//! of its body is read, and keeps the reservation until it has been answered.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The semaphore counts KiB, so that any byte count that fits in memory fits its permits.
const UNIT: usize = 1024;

/// Body bytes that may be in flight at once, shared by every webhook route.
#[derive(Clone, Debug)]
pub(crate) struct BodyBudget {
    units: Arc<Semaphore>,
}

/// A reservation, released when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    _permit: OwnedSemaphorePermit,
}

impl BodyBudget {
    /// A budget of `bytes` (rounded up to whole KiB).
    pub(crate) fn new(bytes: usize) -> Self {
        let units = bytes.div_ceil(UNIT).clamp(1, Semaphore::MAX_PERMITS);
        BodyBudget {
            units: Arc::new(Semaphore::new(units)),
        }
    }

    /// Reserves `bytes` now, or `None` when the budget has not that much left: the caller
    /// refuses the delivery rather than waiting, so a full budget never queues connections.
    pub(crate) fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        let units = u32::try_from(bytes.div_ceil(UNIT).max(1)).ok()?;
        let permit = self.units.clone().try_acquire_many_owned(units).ok()?;
        Some(Reservation { _permit: permit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_refused_once_the_budget_is_spent_and_return_when_dropped() {
        let budget = BodyBudget::new(3 * 1024 * 1024);
        let first = budget.try_reserve(1024 * 1024).expect("room for one");
        let second = budget
            .try_reserve(2 * 1024 * 1024)
            .expect("room for two more");
        assert!(budget.try_reserve(1).is_none(), "the budget is spent");
        drop(first);
        assert!(
            budget.try_reserve(1024 * 1024).is_some(),
            "a dropped reservation returns"
        );
        drop(second);
        assert!(
            budget.try_reserve(usize::MAX).is_none(),
            "more than the budget never fits"
        );
    }
}
