//! Decisions on a remembered account (PostgreSQL: the account this store last wrote, decided on
//! without a read) answer what a decision on a read would: whatever the projection recorded
//! since (a purchase, a refund), a key answered before, a reservation settled before, another
//! replica's spend. Each test first makes the store remember the organization's account, and
//! checks that the decisive request did (or did not) start from it.

use billing_sync_credits::{Answer, Request};
use billing_sync_projection::PurchaseSource;
use billing_sync_projection::{Change, ChargeRefund, CreditPurchase};
use billing_sync_store::Store;
use billing_sync_testkit::state::migrated_store;
use billing_sync_testkit::{Backend, TestDatabase};

use crate::credits::{consume, customer_link, deliver, grant, one_request};

const NOW: i64 = 1_800_000_000;

/// Decides `request` for `organization` alone; its answer.
async fn decide(store: &Store, organization: &str, request: Request) -> Answer {
    let mut answers = store
        .decide_credits(&[one_request(organization, request)], "credits", NOW)
        .await
        .expect("decide");
    answers.remove(0).remove(0)
}

/// Who a purchase names.
enum Buyer<'a> {
    Organization(&'a str),
    Customer(&'a str),
}

/// A checkout session `session` that bought `credits`, paid by payment `pi_{session}`.
fn checkout(session: &str, buyer: Buyer<'_>, credits: i64) -> Change {
    let (organization_id, customer_id) = match buyer {
        Buyer::Organization(organization) => (Some(organization.to_owned()), None),
        Buyer::Customer(customer) => (None, Some(customer.to_owned())),
    };
    Change::CreditPurchase(CreditPurchase {
        reference: format!("checkout:{session}"),
        source: PurchaseSource::Checkout,
        customer_id,
        organization_id,
        price_id: None,
        quantity: None,
        credits: Some(credits),
        expires_at: None,
        payment_id: Some(format!("pi_{session}")),
    })
}

/// Grants `amount` to `organization` and consumes 1 twice: the second consume is decided on the
/// account the first one's write left remembered. Returns the balance (`amount - 2`).
async fn remembered_with(store: &Store, organization: &str, amount: i64) -> i64 {
    decide(store, organization, grant(amount)).await;
    decide(store, organization, consume(1, "first")).await;
    let before = store.credit_decisions_remembered();
    let answer = decide(store, organization, consume(1, "second")).await;
    assert!(matches!(answer, Answer::Done { .. }), "{answer:?}");
    assert_eq!(
        store.credit_decisions_remembered(),
        before + 1,
        "the second consume was decided on the remembered account"
    );
    amount - 2
}

billing_sync_testkit::postgres_test! {
    /// A purchase (a pending grant) recorded after the account was remembered, named by the
    /// organization or by its customer: the next consume, though it starts from the remembered
    /// account, is written only with the purchase credited first.
    #[tokio::test]
    async fn a_purchase_recorded_since_the_account_was_remembered_is_credited_by_the_next_consume() {
        let Some(db) = TestDatabase::create(Backend::Postgres).await else {
            return;
        };
        let store = migrated_store(&db.url).await;
        let mut event_id = 0;
        for by_customer in [false, true] {
            let organization = format!("org_{by_customer}");
            let customer = format!("cus_{by_customer}");
            deliver(
                &store,
                &mut event_id,
                vec![customer_link(&customer, &organization)],
            )
            .await;
            let balance = remembered_with(&store, &organization, 10).await;
            deliver(
                &store,
                &mut event_id,
                vec![checkout(
                    &format!("cs_{by_customer}"),
                    if by_customer {
                        Buyer::Customer(&customer)
                    } else {
                        Buyer::Organization(&organization)
                    },
                    50,
                )],
            )
            .await;
            let before = store.credit_decisions_remembered();
            let answer = decide(&store, &organization, consume(1, "after")).await;
            assert_eq!(store.credit_decisions_remembered(), before + 1);
            assert!(
                matches!(answer, Answer::Done { balance: b, .. } if b == balance + 50 - 1),
                "by customer {by_customer}: the purchase credited before the consume: {answer:?}"
            );
        }
    }
}

billing_sync_testkit::postgres_test! {
    /// A refund of a grant's payment recorded after the account was remembered is taken back by
    /// the next consume, as a read would have it.
    #[tokio::test]
    async fn a_refund_recorded_since_the_account_was_remembered_is_taken_back_by_the_next_consume() {
        let Some(db) = TestDatabase::create(Backend::Postgres).await else {
            return;
        };
        let store = migrated_store(&db.url).await;
        let mut event_id = 0;
        deliver(
            &store,
            &mut event_id,
            vec![checkout("cs_paid", Buyer::Organization("org_r"), 100)],
        )
        .await;
        // The purchase is credited by the first consume, then remembered.
        decide(&store, "org_r", consume(1, "first")).await;
        let before = store.credit_decisions_remembered();
        let answer = decide(&store, "org_r", consume(1, "second")).await;
        assert!(matches!(answer, Answer::Done { balance: 98, .. }), "{answer:?}");
        assert_eq!(store.credit_decisions_remembered(), before + 1);

        // Half of the payment refunded: half of the 100 credits are taken back.
        deliver(
            &store,
            &mut event_id,
            vec![Change::ChargeRefund(ChargeRefund {
                charge_id: "ch_paid".to_owned(),
                payment_id: "pi_cs_paid".to_owned(),
                paid: 1_000,
                refunded: 500,
            })],
        )
        .await;
        let answer = decide(&store, "org_r", consume(1, "after")).await;
        assert!(
            matches!(answer, Answer::Done { balance: 47, .. }),
            "50 taken back before the consume: {answer:?}"
        );
    }
}

billing_sync_testkit::postgres_test! {
    /// A key answered before is answered again, never spent a second time, when the account is
    /// remembered: as a new spend the unique index refuses it (and the batch is decided on a read),
    /// and as a refusal (the balance no longer covers it) it is decided on a read from the start.
    #[tokio::test]
    async fn a_key_answered_before_gets_its_answer_again_from_a_remembered_account() {
        let Some(db) = TestDatabase::create(Backend::Postgres).await else {
            return;
        };
        let store = migrated_store(&db.url).await;
        let balance = remembered_with(&store, "org_k", 10).await;
        assert_eq!(balance, 8);
        let first = decide(&store, "org_k", consume(4, "spend")).await;
        assert!(matches!(first, Answer::Done { balance: 4, .. }), "{first:?}");

        // Covered by the balance: decided on the remembered account as a new spend, refused by the
        // unique index, answered from the ledger.
        let again = decide(&store, "org_k", consume(4, "spend")).await;
        assert_eq!(again, first, "the earlier answer, not a second spend");

        // No longer covered: a refusal is not decided on the remembered account.
        decide(&store, "org_k", consume(4, "rest")).await;
        let before = store.credit_decisions_remembered();
        let again = decide(&store, "org_k", consume(4, "spend")).await;
        assert_eq!(again, first, "the earlier answer, not a refusal");
        assert_eq!(store.credit_decisions_remembered(), before);

        let ledger = store.credit_transactions("org_k").await.expect("ledger");
        let keys: Vec<_> = ledger
            .iter()
            .map(|row| row.idempotency_key.as_deref().unwrap_or_default())
            .collect();
        assert_eq!(keys, ["grant", "first", "second", "spend", "rest"]);
        assert_eq!(ledger.last().map(|row| row.balance_after), Some(0));
    }
}

billing_sync_testkit::postgres_test! {
    /// A capture repeated after its reservation was settled gets the settlement's answer: the
    /// reservation is no longer open in the remembered account, so it is decided on a read.
    #[tokio::test]
    async fn a_capture_repeated_after_its_reservation_settled_gets_the_same_answer() {
        let Some(db) = TestDatabase::create(Backend::Postgres).await else {
            return;
        };
        let store = migrated_store(&db.url).await;
        remembered_with(&store, "org_h", 20).await;
        let held = decide(
            &store,
            "org_h",
            Request::Reserve {
                amount: 10,
                seconds: 600,
                key: "job".to_owned(),
                reason: None,
            },
        )
        .await;
        let Answer::Reserved { reservation, .. } = held else {
            panic!("{held:?}");
        };
        let capture = Request::Capture {
            reservation,
            amount: 3,
        };
        let captured = decide(&store, "org_h", capture.clone()).await;
        assert!(matches!(captured, Answer::ReservationSettled { .. }), "{captured:?}");
        assert_eq!(decide(&store, "org_h", capture).await, captured);
    }
}

billing_sync_testkit::postgres_test! {
    /// Another replica's spend since this store remembered the account: the decision on the
    /// remembered account is not written, and decided again on what the other committed.
    #[tokio::test]
    async fn another_replicas_spend_since_the_account_was_remembered_is_not_spent_again() {
        let Some(db) = TestDatabase::create(Backend::Postgres).await else {
            return;
        };
        let store = migrated_store(&db.url).await;
        let other = Store::connect(&db.url).await.expect("the other replica");
        let balance = remembered_with(&store, "org_x", 10).await;
        let spent = decide(&other, "org_x", consume(balance, "elsewhere")).await;
        assert!(matches!(spent, Answer::Done { balance: 0, .. }), "{spent:?}");
        let answer = decide(&store, "org_x", consume(1, "here")).await;
        assert!(
            matches!(answer, Answer::Insufficient { balance: 0 }),
            "decided again on the other replica's spend: {answer:?}"
        );
    }
}
