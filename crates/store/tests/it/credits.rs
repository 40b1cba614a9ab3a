//! The credit ledger through the store agrees with the rules applied to a plain in-memory
//! account: random histories of purchases (checkout and invoice allowances, some named by
//! their customer only), refunds (redelivered and reordered), redeliveries, expiries, consumes
//! and grants, on both backends. After every decision the answers and balances are the
//! model's, and the stored ledger explains the balance: the sum of the transactions, and the
//! remaining of the unexpired grants less the debt.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use billing_sync_credits::{Account, Grant, GrantSource, Payment, Request, decide};
use billing_sync_projection::stripe::{Object, price, product};
use billing_sync_projection::{
    Change, ChargeRefund, CreditPurchase, CustomerLink, LinkedBy, NewEvent, Plan, Provider,
    PurchaseSource, Seen,
};
use billing_sync_store::Store;
use billing_sync_store::credits::OrganizationRequests;
use billing_sync_store::entities::{
    credit_accounts, credit_grants, credit_reservations, credit_transactions,
};
use billing_sync_store::sea_orm::{
    ColumnTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter, Statement,
};
use billing_sync_testkit::state::migrated_store;
use billing_sync_testkit::{TestDatabase, each_backend};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

each_backend!(
    random_histories_through_the_store_agree_with_the_rules,
    a_refused_consume_of_an_organization_without_a_ledger_writes_nothing,
);

const CASES: u64 = 25;
const STEPS: usize = 40;
const ORGANIZATIONS: [&str; 2] = ["org_a", "org_b"];
/// Credits per unit of the plan's price, from its product's metadata.
const PLAN_CREDITS: i64 = 7;

/// Customer `customer` linked to `organization` (by its metadata).
pub(crate) fn customer_link(customer: &str, organization: &str) -> Change {
    Change::CustomerLink(CustomerLink {
        customer_id: customer.to_owned(),
        organization_id: organization.to_owned(),
        linked_by: LinkedBy::Metadata,
        livemode: false,
    })
}

/// Records `changes` as one webhook event with a fresh id.
pub(crate) async fn deliver(store: &Store, id: &mut u64, changes: Vec<Change>) {
    *id += 1;
    let event = NewEvent {
        provider: Provider::Stripe,
        event_id: format!("evt_{id}"),
        event_type: "test.credits".into(),
        api_version: None,
        livemode: Some(false),
        event_created: Some(1_700_000_000),
        payload: json!({}),
        payload_text: Arc::from("{}"),
        object_text: None,
    };
    store
        .record_and_apply(&event, &Plan::Apply(changes))
        .await
        .expect("record");
}

async fn random_histories_through_the_store_agree_with_the_rules(db: TestDatabase) {
    let store = migrated_store(&db.url).await;
    let mut event_id = 0;
    // The catalog: a plan whose product grants PLAN_CREDITS a unit; customer cus_a is org_a's.
    let catalog = [
        product(
            Object::from(
                &json!({"id": "prod_plan", "object": "product", "active": true,
                "metadata": {"credits": PLAN_CREDITS.to_string()}}),
            ),
            1,
            Seen::Created,
        ),
        price(
            Object::from(
                &json!({"id": "price_plan", "object": "price", "active": true,
                "currency": "eur", "product": "prod_plan", "metadata": {}}),
            ),
            1,
            Seen::Created,
        ),
    ]
    .map(|change| change.expect("a catalog object"));
    deliver(&store, &mut event_id, catalog.to_vec()).await;

    let mut now = 1_800_000_000;
    for case in 0..CASES {
        let mut rng = StdRng::seed_from_u64(case);
        let mut model: BTreeMap<&str, Account> = BTreeMap::new();
        let mut payments: HashMap<String, Payment> = HashMap::new();
        let mut references: HashSet<String> = HashSet::new();
        let org_of = |n: u64| format!("c{case}_{}", ORGANIZATIONS[n as usize % 2]);
        let orgs = [org_of(0), org_of(1)];
        // The first organization's customer: purchases may name only it.
        let customer = format!("c{case}_cus_a");
        deliver(
            &store,
            &mut event_id,
            vec![customer_link(&customer, &orgs[0])],
        )
        .await;
        for step in 0..STEPS {
            now += rng.random_range(1..40);
            match rng.random_range(0..10) {
                // A purchase or an allowance, maybe one already recorded.
                0..=2 => {
                    let n = rng.random_range(0..6);
                    let org = rng.random_range(0..2);
                    let checkout = rng.random_bool(0.5);
                    let reference = if checkout {
                        format!("checkout:c{case}_cs_{n}")
                    } else {
                        format!("invoice:c{case}_in_{n}:il_1")
                    };
                    let payment = format!("c{case}_pi_{}", rng.random_range(0..3));
                    let by_customer = org == 0 && rng.random_bool(0.5);
                    let purchase = CreditPurchase {
                        reference: reference.clone(),
                        source: if checkout {
                            PurchaseSource::Checkout
                        } else {
                            PurchaseSource::Invoice
                        },
                        customer_id: by_customer.then(|| customer.clone()),
                        organization_id: (!by_customer).then(|| orgs[org].clone()),
                        price_id: Some("price_plan".into()),
                        quantity: Some(rng.random_range(1..5)),
                        credits: checkout.then(|| rng.random_range(1..100)),
                        expires_at: (!checkout).then(|| now + rng.random_range(1..300)),
                        payment_id: Some(payment),
                    };
                    deliver(
                        &store,
                        &mut event_id,
                        vec![Change::CreditPurchase(purchase)],
                    )
                    .await;
                    if references.insert(reference.clone()) {
                        let row = credit_grants::Entity::find()
                            .filter(credit_grants::Column::Reference.eq(reference))
                            .one(store.connection())
                            .await
                            .expect("query")
                            .expect("the grant is recorded");
                        let amount = row
                            .amount
                            .unwrap_or(PLAN_CREDITS * row.quantity.unwrap_or(0));
                        model
                            .entry(ORGANIZATIONS[org])
                            .or_default()
                            .grants
                            .push(Grant {
                                id: Some(row.id),
                                source: GrantSource::parse(&row.source).expect("source"),
                                reference: row.reference,
                                amount,
                                remaining: 0,
                                expired: 0,
                                taken_back: 0,
                                expires_at: row.expires_at,
                                created_at: row.created_at,
                                payment: row.payment_id,
                                credited: false,
                            });
                    }
                }
                // A refund, possibly older than one already recorded (delivered late).
                3 => {
                    let payment = format!("c{case}_pi_{}", rng.random_range(0..3));
                    let refunded = rng.random_range(0..=1_000);
                    let refund = ChargeRefund {
                        charge_id: format!("ch_{payment}"),
                        payment_id: payment.clone(),
                        paid: 1_000,
                        refunded,
                    };
                    deliver(&store, &mut event_id, vec![Change::ChargeRefund(refund)]).await;
                    let known = payments.entry(payment).or_insert(Payment {
                        paid: 1_000,
                        refunded: 0,
                    });
                    known.refunded = known.refunded.max(refunded);
                }
                // A batch of requests for one or both organizations.
                _ => {
                    let mut batch = Vec::new();
                    for index in 0..orgs.len() {
                        if rng.random_bool(0.3) {
                            continue;
                        }
                        let requests: Vec<Request> = (0..rng.random_range(1..6))
                            .map(|_| {
                                let key = format!("k{}", rng.random_range(0..25));
                                let number = rng.random_range(1..60);
                                match rng.random_range(0..9) {
                                    6 => Request::Reserve {
                                        amount: rng.random_range(1..40),
                                        seconds: rng.random_range(1..100),
                                        key,
                                        reason: None,
                                    },
                                    7 => Request::Capture {
                                        reservation: number,
                                        amount: rng.random_range(0..40),
                                    },
                                    8 => Request::Release {
                                        reservation: number,
                                    },
                                    0 => Request::Grant {
                                        amount: rng.random_range(1..60),
                                        expires_at: rng
                                            .random_bool(0.4)
                                            .then(|| now + rng.random_range(-5..200)),
                                        key,
                                        reason: None,
                                    },
                                    1 => Request::Settle,
                                    _ => Request::Consume {
                                        amount: rng.random_range(1..40),
                                        key,
                                        reason: rng.random_bool(0.2).then(|| "api call".into()),
                                    },
                                }
                            })
                            .collect();
                        batch.push((index, requests));
                    }
                    let store_batch: Vec<OrganizationRequests> = batch
                        .iter()
                        .map(|(index, requests)| OrganizationRequests {
                            organization_id: orgs[*index].clone(),
                            requests: requests.clone(),
                        })
                        .collect();
                    let answers = store
                        .decide_credits(&store_batch, "credits", now)
                        .await
                        .expect("decide");
                    for ((index, requests), answers) in batch.iter().zip(answers) {
                        let account = model.entry(ORGANIZATIONS[*index]).or_default();
                        account.payments = payments.clone();
                        let expected = decide(account, now, requests).answers;
                        assert_eq!(
                            answers, expected,
                            "case {case} step {step}: {} answered otherwise than the rules",
                            orgs[*index]
                        );
                    }
                }
            }
            for (index, org) in orgs.iter().enumerate() {
                let balance = model.get(ORGANIZATIONS[index]).map_or(0, |a| a.balance);
                assert_ledger_explains(&store, org, balance, case, step).await;
            }
        }
    }
    // On PostgreSQL the histories went through decisions on remembered accounts too (the
    // accounts this store last wrote), not only through reads.
    let remembered = store.credit_decisions_remembered();
    match store.connection().get_database_backend() {
        DbBackend::Postgres => assert!(
            remembered >= CASES,
            "decisions on remembered accounts: {remembered}"
        ),
        _ => assert_eq!(remembered, 0),
    }
}

/// The stored ledger of `org` explains `balance`, the model's.
async fn assert_ledger_explains(store: &Store, org: &str, balance: i64, case: u64, step: usize) {
    let account = credit_accounts::Entity::find_by_id(org.to_owned())
        .one(store.connection())
        .await
        .expect("query");
    let (stored, debt, held) = account.map_or((0, 0, 0), |a| (a.balance, a.debt, a.held));
    assert_eq!(stored, balance, "case {case} step {step}: {org}'s balance");
    let transactions = store.credit_transactions(org).await.expect("ledger");
    let sum: i64 = transactions.iter().map(|t| t.amount).sum();
    assert_eq!(
        sum, balance,
        "case {case} step {step}: {org}'s transactions"
    );
    for (n, transaction) in transactions.iter().enumerate() {
        assert_eq!(
            transaction.sequence,
            n as i64 + 1,
            "case {case} step {step}"
        );
    }
    let grants = credit_grants::Entity::find()
        .filter(credit_grants::Column::OrganizationId.eq(org))
        .filter(credit_grants::Column::Credited.eq(true))
        .all(store.connection())
        .await
        .expect("grants");
    // Expiries are written off by the next decision for the organization; until then what
    // expired since is still in the balance, as it is in the grants' remaining.
    let remaining: i64 = grants.iter().map(|g| g.remaining).sum();
    assert_eq!(
        remaining - debt,
        balance + held,
        "case {case} step {step}: {org}'s grants less its debt"
    );
    let open: i64 = credit_reservations::Entity::find()
        .filter(credit_reservations::Column::OrganizationId.eq(org))
        .filter(credit_reservations::Column::Settlement.is_null())
        .all(store.connection())
        .await
        .expect("reservations")
        .iter()
        .map(|r| r.amount)
        .sum();
    assert_eq!(
        open, held,
        "case {case} step {step}: {org}'s open reservations"
    );
}

/// A consume refused for an organization the ledger has never seen leaves no account row (the
/// decision makes one to lock it); one that is not refused keeps its row.
async fn a_refused_consume_of_an_organization_without_a_ledger_writes_nothing(db: TestDatabase) {
    let store = migrated_store(&db.url).await;
    let consume = |organization: &str, key: &str| one_request(organization, consume(5, key));
    let grant = one_request("org_granted", grant(10));
    let answers = store
        .decide_credits(
            &[
                consume("org_unknown", "spend"),
                grant,
                consume("org_granted", "spend"),
            ],
            "credits",
            1_800_000_000,
        )
        .await
        .expect("decide");
    assert!(
        matches!(
            answers[0][..],
            [billing_sync_credits::Answer::Insufficient { balance: 0 }]
        ),
        "{answers:?}"
    );
    let accounts: Vec<String> = credit_accounts::Entity::find()
        .all(store.connection())
        .await
        .expect("accounts")
        .into_iter()
        .map(|account| account.organization_id)
        .collect();
    assert_eq!(accounts, ["org_granted"]);
}

billing_sync_testkit::postgres_test! {
    /// The lookup of earlier answers probes each (organization, key) it is given, whatever the
    /// organization's history and whatever the statistics know of it: 20,000 transactions of
    /// one organization, never analyzed (autovacuum off for the table, as when it has grown
    /// faster than autoanalyze).
    #[tokio::test]
    async fn the_lookup_of_earlier_answers_probes_its_keys_however_long_the_history() {
        let Some((_db, store)) = unanalyzed_postgres_store(
            "credit_transactions",
            &consumes_of("'org_hot'", "n", 1, 20_000),
        )
        .await
        else {
            return;
        };
        lookups_probe_their_keys(store.connection(), "org_hot", 20_000).await;
    }

    /// The same when the statistics are wrong the other way: analyzed while each of 1,000
    /// organizations had one transaction, so that an organization looks like one row, and one
    /// of them grew to 20,000 before the next analyze (a new customer's first heavy day). The
    /// primary key `(organization_id, sequence)` then looked as good as the unique key, and
    /// each lookup walked the organization's history by it, filtering on the key (told only
    /// that an organization is many rows, the planner scanned the table to the first match,
    /// every key having looked like `fund`): the credits
    /// bench, after a `VACUUM (ANALYZE)` of its 1,000 funded organizations, spent 600 µs of
    /// PostgreSQL a consume at 1 × 16 (1,500/s, against 9,900 without the analyze).
    #[tokio::test]
    async fn the_lookup_of_earlier_answers_probes_its_keys_when_each_organization_looked_like_one_row() {
        use billing_sync_store::sea_orm::ConnectionTrait;
        let Some((_db, store)) = unanalyzed_postgres_store(
            "credit_transactions",
            // One funding grant each, every one's key `fund`.
            "INSERT INTO credit_transactions (organization_id, sequence, kind, amount, \
             balance_after, idempotency_key, fingerprint, created_at) \
             SELECT 'org_' || lpad(n::text, 4, '0'), 1, 'grant', 10, 10, 'fund', 'f', 1700000000 \
             FROM generate_series(0, 999) AS n",
        )
        .await
        else {
            return;
        };
        let connection = store.connection();
        connection
            .execute_unprepared("ANALYZE credit_transactions")
            .await
            .expect("analyze");
        // Looked up early in its growth (the plan a prepared statement may keep) and late.
        let mut history = 0;
        for grown_to in [1_000, 20_000] {
            let sql = consumes_of("'org_0000'", "1 + n", history + 1, grown_to);
            connection
                .execute_unprepared(&sql)
                .await
                .unwrap_or_else(|err| panic!("{sql}: {err}"));
            history = grown_to;
            lookups_probe_their_keys(connection, "org_0000", history).await;
        }
    }

    /// The grants a batch's decision reads are its organizations' own, read through their
    /// index, however many other organizations hold grants: 1,000 and 20,000 organizations with
    /// a grant each, never analyzed and then analyzed, and batches of 1 to 200 of them (the
    /// last one with no grant). No step of the plan reads more rows than the batch has organizations, nor
    /// drops any it read. Written as `organization_id IN (…)` with the customers' grants in the
    /// same `WHERE`, it was a scan of every organization's grants.
    #[tokio::test]
    async fn a_batch_reads_its_organizations_grants_however_many_others_hold_some() {
        use billing_sync_store::credits::grants_to_decide;
        use billing_sync_store::sea_orm::{ConnectionTrait, DbBackend};
        // With every table analyzed (the payments known to be none), a small table of grants
        // was read whole and hashed: a scan is cheap next to a probe for each of the 100
        // organizations the planner assumes a JSON list holds. A large one was not.
        for holders in [1_000, 20_000] {
            let Some((_db, store)) = unanalyzed_postgres_store(
                "credit_grants",
                &format!(
                    "INSERT INTO credit_grants (organization_id, source, amount, remaining, \
                     expired, taken_back, created_at, credited) \
                     SELECT 'org_' || lpad(n::text, 5, '0'), 'api', 10, 10, 0, 0, 1700000000, \
                     true FROM generate_series(1, {holders}) AS n"
                ),
            )
            .await
            else {
                return;
            };
            let connection = store.connection();
            for analyzed in [false, true] {
                if analyzed {
                    connection
                        .execute_unprepared("VACUUM (ANALYZE)")
                        .await
                        .expect("analyze");
                }
                for count in [1, 8, 32, 200] {
                    let mut organizations: Vec<String> = (0..count - 1)
                        .map(|n| format!("org_{:05}", 1 + n * (holders / 200)))
                        .collect();
                    organizations.push("org_none".to_owned());
                    let organizations: Vec<&str> =
                        organizations.iter().map(String::as_str).collect();
                    let read = grants_to_decide(DbBackend::Postgres, &organizations);

                    let found = connection.query_all_raw(read.clone()).await.expect("read");
                    let mut granted: Vec<String> = found
                        .iter()
                        .map(|row| row.try_get::<String>("", "organization_id").expect("org"))
                        .collect();
                    granted.sort();
                    assert_eq!(
                        granted,
                        organizations[..count - 1],
                        "their grants, and only theirs ({holders} holders, analyzed: {analyzed})"
                    );

                    each_step_reads_at_most(connection, &read, count, "organizations").await;
                }
            }
        }
    }

    /// A customer's pending grant that names no organization is credited once, even when the
    /// customer is linked to another organization while a decision of the first is being made:
    /// here the other organization's decision (another replica's transaction) credits the grant
    /// while this one, which read it pending for `org_b`, waits to write. This write must not
    /// take the grant (that organization's account and ledger have it) nor credit it: it fails
    /// as its data's fault, and decided again the consume is refused.
    #[tokio::test]
    async fn a_pending_grant_another_organization_credited_since_the_read_is_not_credited_again() {
        use billing_sync_credits::Answer;
        use billing_sync_store::sea_orm::{ConnectionTrait, Database, TransactionTrait};
        let Some(db) = TestDatabase::create(billing_sync_testkit::Backend::Postgres).await else {
            return;
        };
        let store = migrated_store(&db.url).await;
        let now = 1_800_000_000;
        for sql in [
            "INSERT INTO stripe_customers (id, ordering_key, ordering_rank, synced_at, livemode, \
             organization_id) VALUES ('cus_c', 1, 0, now(), false, 'org_b')",
            "INSERT INTO credit_grants (customer_id, source, reference, amount, remaining, \
             expired, taken_back, created_at, credited) \
             VALUES ('cus_c', 'checkout', 'checkout:cs_1', 50, 0, 0, 0, 1800000000, false)",
        ] {
            store.connection().execute_unprepared(sql).await.expect(sql);
        }

        // The other organization's decision, after the customer was linked to it: it credits
        // the grant, not yet committed.
        let other = Database::connect(&db.url).await.expect("connect");
        let crediting = other.begin().await.expect("begin");
        crediting
            .execute_unprepared(
                "UPDATE credit_grants SET organization_id = 'org_a', credited = true, \
                 remaining = 50 WHERE reference = 'checkout:cs_1'",
            )
            .await
            .expect("credit to org_a");

        let consume = || {
            let store = store.clone();
            async move {
                store
                    .decide_credits(
                        &[one_request("org_b", consume(10, "here"))],
                        "credits",
                        now,
                    )
                    .await
            }
        };
        // This decision reads the grant pending for org_b and waits for its row.
        let consuming = tokio::spawn(consume());
        until_it_waits_for_a_lock(&other, &consuming).await;
        crediting.commit().await.expect("commit");

        let failed = consuming.await.expect("task");
        let err = failed.expect_err("a write whose grant was credited elsewhere fails");
        assert!(!err.retryable(), "its data's fault, decided again in parts: {err}");
        let grant = credit_grants::Entity::find()
            .filter(credit_grants::Column::Reference.eq("checkout:cs_1"))
            .one(store.connection())
            .await
            .expect("grant")
            .expect("its row");
        assert_eq!(grant.organization_id.as_deref(), Some("org_a"));
        assert!(
            credit_accounts::Entity::find_by_id("org_b")
                .one(store.connection())
                .await
                .expect("account")
                .is_none(),
            "nothing of org_b's written"
        );

        let answers = consume().await.expect("decided again");
        assert!(
            matches!(answers[0][..], [Answer::Insufficient { balance: 0 }]),
            "decided again without the grant: {answers:?}"
        );
    }

    /// A decision made on an unlocked read is written only if no other replica wrote for the
    /// organization since: here another replica's transaction spends the whole balance while
    /// this replica's consume, decided on the balance before it, waits to write. That consume
    /// must not be written (it would spend the credits twice); it is decided again on what the
    /// other committed, and refused.
    #[tokio::test]
    async fn a_decision_is_not_written_over_what_another_replica_committed_since_its_read() {
        let Some((_db, store)) = refused_while_another_transaction_writes(
            &[
            "UPDATE credit_accounts SET balance = 0, last_sequence = 2 \
             WHERE organization_id = 'org_x'",
            "UPDATE credit_grants SET remaining = 0 WHERE organization_id = 'org_x'",
            "INSERT INTO credit_transactions (organization_id, sequence, kind, amount, \
             balance_after, idempotency_key, fingerprint, created_at) \
             VALUES ('org_x', 2, 'consume', -100, 0, 'elsewhere', 'elsewhere', 1800000000)",
            ],
            1,
        )
        .await
        else {
            return;
        };
        let (account, keys) = account_and_keys(&store).await;
        assert_eq!((account, keys), ((0, 2), vec!["grant".to_owned(), "elsewhere".to_owned()]));
    }

    /// The same when what the other transaction wrote adds no ledger row (an account and a grant
    /// changed by hand, say): only the account's version can tell, since no ledger row of the
    /// same sequence collides with the consume's. One consume (the one-spend statement) and two
    /// (the general statement).
    #[tokio::test]
    async fn a_decision_is_not_written_over_an_account_changed_since_its_read_without_a_ledger_row() {
        for consumes in [1, 2] {
            let Some((_db, store)) = refused_while_another_transaction_writes(
                &[
                    "UPDATE credit_accounts SET balance = 0 WHERE organization_id = 'org_x'",
                    "UPDATE credit_grants SET remaining = 0 WHERE organization_id = 'org_x'",
                ],
                consumes,
            )
            .await
            else {
                return;
            };
            let (account, keys) = account_and_keys(&store).await;
            assert_eq!(
                (account, keys),
                ((0, 1), vec!["grant".to_owned()]),
                "{consumes} consumes not written"
            );
        }
    }

}

/// `org_x` granted 100, then another connection's transaction runs `other` (uncommitted, taking
/// `org_x`'s balance to 0) while this store decides a consume of 60 on the balance it read
/// before (60 in `consumes` consumes of one batch: one is written by the one-spend statement,
/// more by the general one); once the consume waits for the transaction's locks, the
/// transaction commits, and each consume must be decided again on what it committed: refused.
/// The database (kept while the store is used) and the store.
async fn refused_while_another_transaction_writes(
    other: &[&str],
    consumes: usize,
) -> Option<(TestDatabase, Store)> {
    use billing_sync_credits::Answer;
    use billing_sync_store::sea_orm::{ConnectionTrait, Database, TransactionTrait};
    let db = TestDatabase::create(billing_sync_testkit::Backend::Postgres).await?;
    let store = migrated_store(&db.url).await;
    let now = 1_800_000_000;
    let request = |request: Request| one_request("org_x", request);
    let granted = store
        .decide_credits(&[request(grant(100))], "credits", now)
        .await
        .expect("grant");
    assert!(
        matches!(
            granted[0][..],
            [Answer::Done {
                transaction: 1,
                balance: 100
            }]
        ),
        "{granted:?}"
    );

    // The other replica's transaction, not yet committed.
    let connection = Database::connect(&db.url).await.expect("connect");
    let writing = connection.begin().await.expect("begin");
    for sql in other {
        writing.execute_unprepared(sql).await.expect(sql);
    }

    // This replica's consume reads the committed balance (100) and waits for the rows.
    let consuming = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .decide_credits(
                    &[OrganizationRequests {
                        organization_id: "org_x".to_owned(),
                        requests: (0..consumes)
                            .map(|n| consume(60 / consumes as i64, &format!("here-{n}")))
                            .collect(),
                    }],
                    "credits",
                    now,
                )
                .await
        }
    });
    until_it_waits_for_a_lock(&connection, &consuming).await;
    writing.commit().await.expect("commit");
    let answers = consuming.await.expect("task").expect("decide");
    assert!(
        answers[0]
            .iter()
            .all(|answer| matches!(answer, Answer::Insufficient { balance: 0 })),
        "decided again on the committed balance: {answers:?}"
    );
    Some((db, store))
}

/// `org_x`'s balance and last sequence, and its ledger's keys in order.
async fn account_and_keys(store: &Store) -> ((i64, i64), Vec<String>) {
    use billing_sync_store::sea_orm::QueryOrder;
    let account = credit_accounts::Entity::find_by_id("org_x")
        .one(store.connection())
        .await
        .expect("account")
        .expect("its row");
    let keys = credit_transactions::Entity::find()
        .filter(credit_transactions::Column::OrganizationId.eq("org_x"))
        .order_by_asc(credit_transactions::Column::Sequence)
        .all(store.connection())
        .await
        .expect("ledger")
        .into_iter()
        .filter_map(|row| row.idempotency_key)
        .collect();
    ((account.balance, account.last_sequence), keys)
}

/// The API's grant of `amount` credits that never expire, under the key `grant`.
pub(crate) fn grant(amount: i64) -> Request {
    Request::Grant {
        amount,
        expires_at: None,
        key: "grant".to_owned(),
        reason: None,
    }
}

/// A consume of `amount` credits under `key`.
pub(crate) fn consume(amount: i64, key: &str) -> Request {
    Request::Consume {
        amount,
        key: key.to_owned(),
        reason: None,
    }
}

/// `organization`'s one request, as a decision takes it.
pub(crate) fn one_request(organization: &str, request: Request) -> OrganizationRequests {
    OrganizationRequests {
        organization_id: organization.to_owned(),
        requests: vec![request],
    }
}

/// Returns once a statement of the test's database waits for a lock (another connection's
/// uncommitted row), polling `pg_stat_activity` through `observer`; fails if `task` ends first.
async fn until_it_waits_for_a_lock<T>(
    observer: &DatabaseConnection,
    task: &tokio::task::JoinHandle<T>,
) {
    use billing_sync_store::sea_orm::ConnectionTrait;
    let waiting = "SELECT count(*) AS waiting FROM pg_stat_activity \
                   WHERE datname = current_database() AND wait_event_type = 'Lock'";
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let row = observer
            .query_one_raw(Statement::from_string(
                observer.get_database_backend(),
                waiting,
            ))
            .await
            .expect("pg_stat_activity")
            .expect("a row");
        if row.try_get::<i64>("", "waiting").expect("count") > 0 {
            return;
        }
        assert!(
            !task.is_finished() && tokio::time::Instant::now() < deadline,
            "the decision never waited for the other transaction's lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A migrated PostgreSQL store whose `table` holds the rows `insert` makes, never analyzed
/// (autovacuum off for the table, as when it has grown faster than autoanalyze), with its
/// database (kept while the store is used); `None` as [`TestDatabase::create`] gives it.
async fn unanalyzed_postgres_store(table: &str, insert: &str) -> Option<(TestDatabase, Store)> {
    use billing_sync_store::sea_orm::ConnectionTrait;
    let db = TestDatabase::create(billing_sync_testkit::Backend::Postgres).await?;
    let store = migrated_store(&db.url).await;
    for sql in [
        format!("ALTER TABLE {table} SET (autovacuum_enabled = false)"),
        insert.to_owned(),
    ] {
        store
            .connection()
            .execute_unprepared(&sql)
            .await
            .unwrap_or_else(|err| panic!("{sql}: {err}"));
    }
    Some((db, store))
}

/// An `INSERT` of consumes `old-{first}` to `old-{last}` of `organization` (an SQL literal), at
/// the sequence `sequence` says of each `n`.
fn consumes_of(organization: &str, sequence: &str, first: usize, last: usize) -> String {
    format!(
        "INSERT INTO credit_transactions (organization_id, sequence, kind, amount, \
         balance_after, idempotency_key, fingerprint, created_at) \
         SELECT {organization}, {sequence}, 'consume', -1, 0, 'old-' || n, 'f', 1700000000 \
         FROM generate_series({first}, {last}) AS n"
    )
}

/// Looks up 2 to 200 keys of `organization`, half of them answered before (among its
/// transactions `old-1` to `old-{history}`), through [`answers_to`](billing_sync_store::credits::answers_to):
/// the earlier answers are found, and no step of the plan reads more rows than there are keys,
/// nor drops any it read.
async fn lookups_probe_their_keys(
    connection: &DatabaseConnection,
    organization: &str,
    history: usize,
) {
    use billing_sync_store::credits::answers_to;
    use billing_sync_store::sea_orm::{ConnectionTrait, DbBackend};
    for half in [1, 6, 20, 100] {
        let keys: Vec<String> = (0..half)
            .map(|n| format!("new-{n}"))
            .chain((0..half).map(|n| format!("old-{}", 1 + n * (history / half - 1))))
            .collect();
        let pairs: Vec<(&str, &str)> = keys
            .iter()
            .map(|key| (organization, key.as_str()))
            .collect();
        let lookup = answers_to(DbBackend::Postgres, &pairs);

        let found = connection
            .query_all_raw(lookup.clone())
            .await
            .expect("lookup");
        let mut answered: Vec<String> = found
            .iter()
            .map(|row| row.try_get::<String>("", "idempotency_key").expect("key"))
            .collect();
        answered.sort();
        let mut expected: Vec<String> = keys[half..].to_vec();
        expected.sort();
        assert_eq!(
            answered, expected,
            "the keys answered before, and only they"
        );

        each_step_reads_at_most(connection, &lookup, keys.len(), "keys").await;
    }
}

/// Runs `statement` under `EXPLAIN ANALYZE` and asserts that no step of its plan read more than
/// `bound` rows (of `what` there are) or dropped any row it read.
async fn each_step_reads_at_most(
    connection: &DatabaseConnection,
    statement: &Statement,
    bound: usize,
    what: &str,
) {
    use billing_sync_store::sea_orm::{ConnectionTrait, DbBackend};
    let explain = Statement::from_sql_and_values(
        DbBackend::Postgres,
        format!("EXPLAIN (ANALYZE, FORMAT JSON) {}", statement.sql),
        statement
            .values
            .clone()
            .map(|values| values.0)
            .unwrap_or_default(),
    );
    let row = connection
        .query_one_raw(explain)
        .await
        .expect("explain")
        .expect("a plan");
    let plan: serde_json::Value = row.try_get_by_index(0).expect("the plan as JSON");
    let mut nodes = vec![&plan[0]["Plan"]];
    while let Some(node) = nodes.pop() {
        let rows = node["Actual Rows"].as_f64().expect("analyzed");
        let dropped = node["Rows Removed by Filter"].as_f64().unwrap_or(0.0)
            + node["Rows Removed by Index Recheck"]
                .as_f64()
                .unwrap_or(0.0)
            + node["Rows Removed by Join Filter"].as_f64().unwrap_or(0.0);
        assert!(
            rows <= bound as f64 && dropped == 0.0,
            "{} read {rows} rows and dropped {dropped}, for {bound} {what}: {plan:#}",
            node["Node Type"],
        );
        if let Some(children) = node["Plans"].as_array() {
            nodes.extend(children);
        }
    }
}
