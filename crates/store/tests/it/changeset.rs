//! The in-memory reduction of a batch agrees with the SQL guard: applying random states of a
//! few objects one by one through the guarded upserts, and applying them as one reduced
//! [`ChangeSet`] on top of the same stored states, leave the same rows, on both backends. The
//! reduced set goes the way a batch of events goes ([`apply_set_at_once`]: on PostgreSQL one
//! message with the values written in as literals), so the rows also prove that writing.

use billing_sync_projection::{
    Change, CustomerState, OrganizationState, Rank, RawJson, SubscriptionState, SyncedRow, Version,
};
use billing_sync_store::Store;
use billing_sync_store::changeset::{ChangeSet, apply_set, apply_set_at_once};
use billing_sync_store::entities::{organizations, stripe_customers, stripe_subscriptions};
use billing_sync_store::sea_orm::{EntityTrait, QueryOrder, TransactionTrait};
use billing_sync_testkit::{TestDatabase, each_backend};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

each_backend!(a_reduced_batch_leaves_what_applying_its_changes_one_by_one_leaves);

const CASES: u64 = 300;

fn version(rng: &mut StdRng) -> Version {
    Version {
        // A narrow range, so that equal keys (the tie rules) come up often.
        key: rng.random_range(1..4),
        rank: match rng.random_range(0..5) {
            0 => Rank::Initial,
            1..=3 => Rank::Update,
            _ => Rank::Terminal,
        },
    }
}

/// Text that a literal must escape: quotes, a backslash, controls, non-ASCII (the reduced
/// batch is written into PostgreSQL's message as literals, the one-by-one states are bound).
const AWKWARD: &str = "O'Brien \\ \"quoted\" \t\n\u{1} é 😀 $1 ?";

/// A random state of one of two organizations, customers or subscriptions. Each state's `raw`
/// is unique, so the final rows tell which state won.
fn random_change(rng: &mut StdRng, n: usize) -> Change {
    let id = rng.random_range(0..2);
    let version = version(rng);
    let row = |prefix: &str| SyncedRow {
        id: format!("{prefix}_{id}"),
        raw: RawJson::of(&json!({"n": n, "text": AWKWARD})),
        version,
        deleted_at: None,
    };
    match rng.random_range(0..3) {
        0 => Change::Organization(OrganizationState {
            row: row("org"),
            name: Some(format!("name {n} {AWKWARD}")),
            slug: None,
        }),
        1 => Change::Customer(CustomerState {
            row: row("cus"),
            // Customers name no organization here: how a name fills a gap is order-dependent
            // even one by one (the upsert's COALESCE), and not what this property is about.
            organization_id: None,
            email: Some(format!("{n}@example.com")),
            name: None,
            livemode: false,
        }),
        _ => Change::Subscription(SubscriptionState {
            row: row("sub"),
            customer_id: "cus_none".into(),
            organization_id: None,
            status: format!("status {n}"),
            cancel_at_period_end: false,
            cancel_at: None,
            canceled_at: None,
            ended_at: None,
            trial_end: None,
            current_period_start: None,
            current_period_end: None,
            items: json!([]),
            livemode: false,
        }),
    }
}

/// The synced rows' `(id, raw, key, rank)`, every table, in a fixed order.
async fn rows(store: &Store) -> Vec<(String, Option<String>, i64, i16)> {
    let db = store.connection();
    let mut rows = Vec::new();
    // Every synced table has these columns; one read serves each.
    macro_rules! read {
        ($table:ident) => {
            rows.extend(
                $table::Entity::find()
                    .order_by_asc($table::Column::Id)
                    .all(db)
                    .await
                    .expect("read")
                    .into_iter()
                    .map(|r| (r.id, r.raw, r.ordering_key, r.ordering_rank)),
            )
        };
    }
    read!(organizations);
    read!(stripe_customers);
    read!(stripe_subscriptions);
    rows
}

async fn a_reduced_batch_leaves_what_applying_its_changes_one_by_one_leaves(db: TestDatabase) {
    let store = Store::connect(&db.url).await.expect("connect");
    store.migrate_up().await.expect("migrate");
    for seed in 0..CASES {
        let mut rng = StdRng::seed_from_u64(seed);
        let stored: Vec<Change> = (0..rng.random_range(0..4))
            .map(|n| random_change(&mut rng, n))
            .collect();
        let batch: Vec<Change> = (0..rng.random_range(1..16))
            .map(|n| random_change(&mut rng, 100 + n))
            .collect();

        let mut results = Vec::new();
        for reduced in [false, true] {
            let txn = store.connection().begin().await.expect("begin");
            for change in &stored {
                apply_set(&txn, &ChangeSet::of([change]))
                    .await
                    .expect("apply a stored state");
            }
            if reduced {
                // As a batch of events is written: in one message on PostgreSQL.
                apply_set_at_once(&txn, &ChangeSet::of(&batch))
                    .await
                    .expect("apply the reduced batch");
            } else {
                for change in &batch {
                    apply_set(&txn, &ChangeSet::of([change]))
                        .await
                        .expect("apply one by one");
                }
            }
            txn.commit().await.expect("commit");
            results.push(rows(&store).await);
            for table in ["organizations", "stripe_customers", "stripe_subscriptions"] {
                use billing_sync_store::sea_orm::ConnectionTrait;
                store
                    .connection()
                    .execute_unprepared(&format!("DELETE FROM {table}"))
                    .await
                    .expect("clean up");
            }
        }
        assert_eq!(
            results[0], results[1],
            "seed {seed}: stored {stored:#?}\nbatch {batch:#?}"
        );
    }
}
