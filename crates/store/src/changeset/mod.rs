//! Applying the changes of many events as sets: reduced per (table, id) in memory by the
//! guard's own rule ([`supersedes`]) here, then one multi-row guarded upsert per table
//! ([`sql`]).
//!
//! Lock order is what keeps concurrent writers (replicas, or a batch and a replay) from
//! deadlocking: every writer locks the customers it touches first (PostgreSQL advisory locks,
//! sorted), then rows table by table in one fixed order, each table's rows sorted by primary
//! key (a `BTreeMap` per table).

mod sql;

use std::borrow::Cow;
use std::collections::BTreeMap;

pub(crate) use sql::write_apply_set;
pub use sql::{apply_set, apply_set_at_once};

use billing_sync_projection::{
    Change, ChargeRefund, CreditPurchase, CustomerLink, CustomerState, EntitlementsState,
    MembershipState, OrganizationState, PriceState, ProductState, Rank, SubscriptionState,
    SyncedRow, Tie, UserState, Version, supersedes,
};

/// The changes of a batch reduced per (table, id): for each object the rounds of states to
/// write (usually one, see `keep_newer`), each table's objects in primary-key order.
///
/// It borrows the changes it holds (a state is copied only when the reduction must fill one of
/// its gaps), so that reducing a batch copies no payload.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChangeSet<'a> {
    organizations: BTreeMap<&'a str, Vec<Cow<'a, OrganizationState>>>,
    users: BTreeMap<&'a str, Vec<Cow<'a, UserState>>>,
    user_snapshots: BTreeMap<&'a str, &'a UserState>,
    memberships: BTreeMap<&'a str, Vec<Cow<'a, MembershipState>>>,
    customers: BTreeMap<&'a str, Vec<Cow<'a, CustomerState>>>,
    links: BTreeMap<&'a str, &'a CustomerLink>,
    subscriptions: BTreeMap<&'a str, Vec<Cow<'a, SubscriptionState>>>,
    products: BTreeMap<&'a str, Vec<Cow<'a, ProductState>>>,
    prices: BTreeMap<&'a str, Vec<Cow<'a, PriceState>>>,
    entitlements: BTreeMap<&'a str, Vec<Cow<'a, EntitlementsState>>>,
    purchases: BTreeMap<&'a str, &'a CreditPurchase>,
    refunds: BTreeMap<&'a str, &'a ChargeRefund>,
}

/// A synced state as the reduction sees it.
trait Synced: Clone {
    /// How its table breaks a tie between two updates at one key ([`Tie`] says why), read by
    /// the reduction and by the upsert alike.
    const TIE: Tie;
    fn row(&self) -> &SyncedRow;
    fn version(&self) -> Version {
        self.row().version
    }
    /// Whether `other` knows something this state leaves unknown, which the upsert's
    /// `COALESCE` would keep: then [`Synced::fill_gaps_from`] has work to do.
    fn has_gaps_filled_by(&self, _other: &Self) -> bool {
        false
    }
    /// Fills what this state leaves unknown from another state of the same object.
    fn fill_gaps_from(&mut self, _other: &Self) {}
}

macro_rules! synced {
    ($($state:ty => $tie:expr),*) => {$(
        impl Synced for $state {
            const TIE: Tie = $tie;
            fn row(&self) -> &SyncedRow {
                &self.row
            }
        }
    )*};
}
synced!(
    OrganizationState => Tie::StoredWins,
    UserState => Tie::StoredWins,
    MembershipState => Tie::StoredWins,
    ProductState => Tie::LaterArrivalWins,
    PriceState => Tie::LaterArrivalWins,
    EntitlementsState => Tie::LaterArrivalWins
);

/// States that may name an organization or leave it unknown: a later state that leaves it
/// unknown keeps the known one (the upsert's `COALESCE`).
macro_rules! synced_with_organization {
    ($($state:ty => $tie:expr),*) => {$(
        impl Synced for $state {
            const TIE: Tie = $tie;
            fn row(&self) -> &SyncedRow {
                &self.row
            }
            fn has_gaps_filled_by(&self, other: &Self) -> bool {
                self.organization_id.is_none() && other.organization_id.is_some()
            }
            fn fill_gaps_from(&mut self, other: &Self) {
                if self.organization_id.is_none() {
                    self.organization_id.clone_from(&other.organization_id);
                }
            }
        }
    )*};
}
synced_with_organization!(
    CustomerState => Tie::LaterArrivalWins,
    SubscriptionState => Tie::LaterArrivalWins
);

/// Adds `state` to the states of its object, `rounds`: the shortest sequence of states that,
/// applied one round after another through the guarded upsert, leaves what applying every
/// state one by one leaves, whatever is stored. Usually one state, the newest. A second round
/// is needed only where the guard is not transitive: a terminal state that would block a
/// later update, yet itself lose to what is stored (see [`subsumes`]).
fn keep_newer<'a, S: Synced>(rounds: &mut BTreeMap<&'a str, Vec<Cow<'a, S>>>, state: &'a S) {
    let chain = rounds.entry(&state.row().id).or_default();
    let Some(last) = chain.last_mut() else {
        chain.push(Cow::Borrowed(state));
        return;
    };
    if supersedes(state.version(), last.version(), S::TIE) {
        // Whatever `last` would replace, `state` replaces too: `last` can go.
        let mut state = Cow::Borrowed(state);
        fill_gaps(&mut state, last);
        *last = state;
    } else if subsumes(last.version(), state.version()) {
        // `state` would lose to `last`, and could replace nothing that `last` does not.
        fill_gaps(last, state);
    } else {
        chain.push(Cow::Borrowed(state));
    }
}

/// Fills `state`'s gaps from `other`, copying `state` only when there is a gap to fill.
fn fill_gaps<S: Synced>(state: &mut Cow<'_, S>, other: &S) {
    if state.has_gaps_filled_by(other) {
        state.to_mut().fill_gaps_from(other);
    }
}

/// Whether every stored state that `dropped` would replace, `kept` replaces too (by the
/// guard's rule), so that `dropped`, arriving after `kept` and losing to it, can be left out.
fn subsumes(kept: Version, dropped: Version) -> bool {
    let position = |v: Version| (v.key, v.rank);
    match (kept.rank == Rank::Terminal, dropped.rank == Rank::Terminal) {
        // Non-terminal states are only ever stored under a key at most their own.
        (true, false) => dropped.key <= kept.key,
        // A terminal state replaces older terminal states, which no update replaces.
        (false, true) => false,
        _ => position(dropped) <= position(kept),
    }
}

/// Keeps the first of several insert-if-absent changes: only the first could insert.
fn keep_first<'a, S>(states: &mut BTreeMap<&'a str, &'a S>, id: &'a str, state: &'a S) {
    states.entry(id).or_insert(state);
}

impl<'a> ChangeSet<'a> {
    /// A set holding `changes`, in arrival order.
    pub fn of(changes: impl IntoIterator<Item = &'a Change>) -> Self {
        let mut set = ChangeSet::default();
        for change in changes {
            set.add(change);
        }
        set
    }

    /// Adds a change that arrived after every change already in the set.
    pub fn add(&mut self, change: &'a Change) {
        match change {
            Change::Organization(s) => keep_newer(&mut self.organizations, s),
            Change::User(s) => keep_newer(&mut self.users, s),
            Change::UserSnapshot(s) => keep_first(&mut self.user_snapshots, &s.row.id, s),
            Change::Membership(s) => keep_newer(&mut self.memberships, s),
            Change::Customer(s) => keep_newer(&mut self.customers, s),
            Change::CustomerLink(link) => keep_first(&mut self.links, &link.customer_id, link),
            Change::Subscription(s) => keep_newer(&mut self.subscriptions, s),
            Change::Product(s) => keep_newer(&mut self.products, s),
            Change::Price(s) => keep_newer(&mut self.prices, s),
            Change::Entitlements(s) => keep_newer(&mut self.entitlements, s),
            Change::CreditPurchase(p) => keep_first(&mut self.purchases, &p.reference, p),
            Change::ChargeRefund(r) => {
                let kept = self.refunds.entry(&r.charge_id).or_insert(r);
                if r.refunded > kept.refunded {
                    *kept = r;
                }
            }
        }
    }

    /// Whether the set changes nothing.
    pub fn is_empty(&self) -> bool {
        self.organizations.is_empty()
            && self.users.is_empty()
            && self.user_snapshots.is_empty()
            && self.memberships.is_empty()
            && self.customers.is_empty()
            && self.links.is_empty()
            && self.subscriptions.is_empty()
            && self.products.is_empty()
            && self.prices.is_empty()
            && self.entitlements.is_empty()
            && self.purchases.is_empty()
            && self.refunds.is_empty()
    }

    /// Every customer id the set touches (its own rows, links, and subscriptions' customers),
    /// sorted and without repeats.
    /// What the outbox must hear of this set ([`crate::outbox::mark_statement`]): the customers
    /// whose organization's billing it may change, and the organizations it names directly.
    fn billing_touched(&self) -> (Vec<&str>, Vec<&str>) {
        let mut customers: Vec<&str> = self
            .customer_ids()
            .into_iter()
            .chain(self.entitlements.keys().copied())
            .chain(
                self.purchases
                    .values()
                    .filter_map(|purchase| purchase.customer_id.as_deref()),
            )
            .collect();
        customers.sort_unstable();
        customers.dedup();
        let mut organizations: Vec<&str> = self
            .subscriptions
            .values()
            .flatten()
            .filter_map(|s| s.organization_id.as_deref())
            .chain(
                self.customers
                    .values()
                    .flatten()
                    .filter_map(|c| c.organization_id.as_deref()),
            )
            .chain(
                self.links
                    .values()
                    .map(|link| link.organization_id.as_str()),
            )
            .chain(
                self.purchases
                    .values()
                    .filter_map(|purchase| purchase.organization_id.as_deref()),
            )
            .collect();
        organizations.sort_unstable();
        organizations.dedup();
        (customers, organizations)
    }

    fn customer_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self
            .customers
            .keys()
            .chain(self.links.keys())
            .copied()
            .chain(
                self.subscriptions
                    .values()
                    .flatten()
                    .map(|s| s.customer_id.as_str()),
            )
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}
