use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::{MAX_AMOUNT, Payment};

const NOW: UnixSeconds = 1_800_000_000;

fn pending(id: i64, amount: Credits, expires_at: Option<UnixSeconds>, payment: &str) -> Grant {
    Grant {
        id: Some(id),
        source: GrantSource::Checkout,
        reference: Some(format!("checkout:cs_{id}")),
        amount,
        remaining: 0,
        expired: 0,
        taken_back: 0,
        expires_at,
        created_at: NOW - 100 + id,
        payment: Some(payment.to_owned()),
        credited: false,
    }
}

fn consume(amount: Credits, key: &str) -> Request {
    Request::Consume {
        amount,
        key: key.to_owned(),
        reason: None,
    }
}

fn grant(amount: Credits, expires_at: Option<UnixSeconds>, key: &str) -> Request {
    Request::Grant {
        amount,
        expires_at,
        key: key.to_owned(),
        reason: Some("promotion".into()),
    }
}

/// Whether the balance is the sum of every transaction ever appended.
fn sums_up(account: &Account, history: &[Transaction]) -> bool {
    account.balance == history.iter().map(|t| t.amount).sum::<Credits>()
}

#[test]
fn a_pending_purchase_is_credited_then_consumed_until_refused() {
    let mut account = Account {
        grants: vec![pending(1, 100, None, "pi_1")],
        ..Account::default()
    };
    let decided = decide(
        &mut account,
        NOW,
        &[consume(60, "a"), consume(50, "b"), consume(40, "c")],
    );
    assert_eq!(
        decided.answers,
        vec![
            Answer::Done {
                transaction: 2,
                balance: 40
            },
            Answer::Insufficient { balance: 40 },
            Answer::Done {
                transaction: 3,
                balance: 0
            },
        ]
    );
    let kinds: Vec<_> = decided.transactions.iter().map(|t| t.kind).collect();
    assert_eq!(kinds, [Kind::Grant, Kind::Consume, Kind::Consume]);
    assert_eq!(
        decided.transactions[0].reference.as_deref(),
        Some("checkout:cs_1")
    );
    assert!(account.grants[0].credited);
    assert_eq!(account.grants[0].remaining, 0);
    assert!(sums_up(&account, &decided.transactions));
    assert!(account.is_consistent(NOW));
}

#[test]
fn consumption_draws_from_the_grant_expiring_first_then_the_oldest() {
    let mut account = Account::default();
    decide(
        &mut account,
        NOW,
        &[
            grant(10, None, "never"),
            grant(10, Some(NOW + 200), "later"),
            grant(10, Some(NOW + 100), "soon"),
            grant(10, None, "never-too"),
        ],
    );
    decide(&mut account, NOW, &[consume(15, "spend")]);
    let remaining: Vec<_> = account.grants.iter().map(|g| g.remaining).collect();
    assert_eq!(remaining, [10, 5, 0, 10]);
    decide(&mut account, NOW, &[consume(10, "spend-more")]);
    let remaining: Vec<_> = account.grants.iter().map(|g| g.remaining).collect();
    assert_eq!(remaining, [5, 0, 0, 10], "then the oldest never-expiring");
}

#[test]
fn an_expired_allowance_is_written_off_by_a_transaction() {
    let mut account = Account {
        grants: vec![pending(1, 100, Some(NOW + 10), "pi_1")],
        ..Account::default()
    };
    let first = decide(&mut account, NOW, &[consume(30, "a")]);
    let later = decide(&mut account, NOW + 10, &[Request::Settle]);
    assert_eq!(later.answers, vec![Answer::Settled { balance: 0 }]);
    assert_eq!(later.transactions.len(), 1);
    assert_eq!(later.transactions[0].kind, Kind::Expire);
    assert_eq!(later.transactions[0].amount, -70);
    let history: Vec<_> = first
        .transactions
        .into_iter()
        .chain(later.transactions)
        .collect();
    assert!(sums_up(&account, &history));
    assert!(account.is_consistent(NOW + 10));
}

#[test]
fn a_refund_takes_back_its_share_once_and_spent_credits_become_debt_a_grant_repays() {
    let mut account = Account {
        grants: vec![pending(1, 100, None, "pi_1")],
        ..Account::default()
    };
    let mut history = decide(&mut account, NOW, &[consume(80, "a")]).transactions;
    // Half refunded: 50 back, 20 from what remains, 30 already spent: debt.
    account.payments.insert(
        "pi_1".into(),
        Payment {
            paid: 3000,
            refunded: 1500,
        },
    );
    let decided = decide(&mut account, NOW, &[consume(1, "b")]);
    assert_eq!(decided.transactions[0].kind, Kind::Refund);
    assert_eq!(decided.transactions[0].amount, -50);
    assert_eq!(decided.answers, vec![Answer::Insufficient { balance: -30 }]);
    history.extend(decided.transactions);
    // The same refund again takes nothing more; an older, smaller one neither.
    let again = decide(&mut account, NOW, &[Request::Settle]);
    assert!(again.transactions.is_empty());
    account.payments.insert(
        "pi_1".into(),
        Payment {
            paid: 3000,
            refunded: 1000,
        },
    );
    assert!(
        decide(&mut account, NOW, &[Request::Settle])
            .transactions
            .is_empty()
    );
    // A grant pays the debt first.
    let topped = decide(&mut account, NOW, &[grant(50, None, "top-up")]);
    assert_eq!(
        topped.answers,
        vec![Answer::Done {
            transaction: 4,
            balance: 20
        }]
    );
    assert_eq!(account.debt, 0);
    assert_eq!(account.grants[1].remaining, 20);
    history.extend(topped.transactions);
    assert!(sums_up(&account, &history));
    assert!(account.is_consistent(NOW));
}

#[test]
fn an_allowance_that_expired_before_it_was_credited_repays_no_debt() {
    // A refund left 30 of debt; an allowance whose period ended before the ledger credited it
    // (its webhook came late) was never spendable: it pays nothing of that debt.
    let mut account = Account {
        balance: -30,
        debt: 30,
        last_sequence: 3,
        grants: vec![pending(1, 100, Some(NOW - 1), "pi_1")],
        ..Account::default()
    };
    let decided = decide(&mut account, NOW, &[Request::Settle]);
    assert_eq!(decided.answers, vec![Answer::Settled { balance: -30 }]);
    assert_eq!(account.debt, 30, "the debt is still owed");
    let moves: Vec<_> = decided
        .transactions
        .iter()
        .map(|t| (t.kind, t.amount))
        .collect();
    assert_eq!(moves, [(Kind::Grant, 100), (Kind::Expire, -100)]);
    assert_eq!(account.grants[0].expired, 100);
    assert!(account.is_consistent(NOW));
}

#[test]
fn a_grant_already_expired_is_refused_and_changes_nothing() {
    let mut account = Account::default();
    let decided = decide(
        &mut account,
        NOW,
        &[
            grant(50, Some(NOW), "late"),
            grant(50, Some(NOW + 60), "on-time"),
        ],
    );
    assert_eq!(
        decided.answers,
        vec![
            Answer::AlreadyExpired,
            Answer::Done {
                transaction: 1,
                balance: 50
            }
        ]
    );
    assert_eq!(decided.transactions.len(), 1);
    // Asked again once it has expired, the grant decided in time gets its first answer.
    let again = decide(
        &mut account,
        NOW + 120,
        &[grant(50, Some(NOW + 60), "on-time")],
    );
    assert_eq!(
        again.answers,
        vec![Answer::Done {
            transaction: 1,
            balance: 50
        }]
    );
}

#[test]
fn a_purchase_grants_per_unit_times_quantity_within_the_bound_only() {
    assert_eq!(crate::purchased_credits(100, 3), Some(300));
    assert_eq!(crate::purchased_credits(0, 10_000), Some(0));
    assert_eq!(crate::purchased_credits(MAX_AMOUNT, 1), Some(MAX_AMOUNT));
    assert_eq!(
        crate::purchased_credits(MAX_AMOUNT, 2),
        None,
        "past the bound"
    );
    assert_eq!(
        crate::purchased_credits(i64::MAX, 2),
        None,
        "would overflow"
    );
    assert_eq!(crate::purchased_credits(-1, 2), None);
    assert_eq!(crate::purchased_credits(1, -2), None);
}

#[test]
fn a_refund_after_expiry_takes_the_expired_part_first_and_costs_the_balance_nothing() {
    let mut account = Account {
        grants: vec![pending(1, 100, Some(NOW + 10), "pi_1")],
        ..Account::default()
    };
    decide(&mut account, NOW, &[consume(40, "a")]);
    decide(&mut account, NOW + 10, &[Request::Settle]);
    account.payments.insert(
        "pi_1".into(),
        Payment {
            paid: 100,
            refunded: 50,
        },
    );
    let decided = decide(&mut account, NOW + 10, &[Request::Settle]);
    assert!(decided.transactions.is_empty(), "{decided:?}");
    assert_eq!(account.grants[0].expired, 10);
    account.payments.insert(
        "pi_1".into(),
        Payment {
            paid: 100,
            refunded: 100,
        },
    );
    let decided = decide(&mut account, NOW + 10, &[Request::Settle]);
    assert_eq!(
        decided.transactions[0].amount, -40,
        "the spent 40 become debt"
    );
    assert_eq!(account.balance, -40);
}

#[test]
fn a_key_repeated_gets_the_first_answer_and_another_request_under_it_is_refused() {
    let mut account = Account::default();
    decide(&mut account, NOW, &[grant(10, None, "g")]);
    let first = decide(&mut account, NOW, &[consume(3, "k"), consume(3, "k")]);
    assert_eq!(first.answers[0], first.answers[1]);
    assert_eq!(first.transactions.len(), 1, "one debit for the two");
    let again = decide(&mut account, NOW, &[consume(3, "k"), consume(4, "k")]);
    assert_eq!(again.answers[0], first.answers[0]);
    assert_eq!(again.answers[1], Answer::KeyReused);
    assert!(again.transactions.is_empty());
    let as_grant = decide(&mut account, NOW, &[grant(3, None, "k")]);
    assert_eq!(as_grant.answers, vec![Answer::KeyReused]);
    assert_eq!(account.balance, 7);
}

#[test]
fn a_refused_consumption_is_not_remembered_so_a_retry_after_a_top_up_succeeds() {
    let mut account = Account::default();
    let refused = decide(&mut account, NOW, &[consume(5, "k")]);
    assert_eq!(refused.answers, vec![Answer::Insufficient { balance: 0 }]);
    assert!(refused.transactions.is_empty());
    decide(&mut account, NOW, &[grant(5, None, "g")]);
    let retried = decide(&mut account, NOW, &[consume(5, "k")]);
    assert_eq!(
        retried.answers,
        vec![Answer::Done {
            transaction: 2,
            balance: 0
        }]
    );
}

/// Random batches of everything the ledger does, checking after each that the balance is the
/// sum of the transactions and the grants' remaining less the debt, that no consumption
/// overdraws, that a refund never takes back more than its share, and that a repeated key
/// never debits twice. The histories are checked to have held what the rules are about: debt,
/// take-backs, refusals, expiries, grants refused as already expired, and allowances that
/// expired before they were credited.
#[test]
fn random_histories_keep_every_invariant() {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for seed in 0..300 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut account = Account::default();
        let mut history: Vec<Transaction> = Vec::new();
        let mut now = NOW;
        let mut next_id = 1;
        let mut first_answers: HashMap<String, Answer> = HashMap::new();
        for _ in 0..40 {
            now += rng.random_range(0..50);
            // Grants arrive from webhooks between decisions.
            if rng.random_bool(0.3) {
                // Some had expired when they arrive: an allowance whose webhook came late.
                let expires = rng
                    .random_bool(0.5)
                    .then(|| now + rng.random_range(-20..200));
                let payment = format!("pi_{}", rng.random_range(0..4));
                account.grants.push(Grant {
                    created_at: now,
                    ..pending(next_id, rng.random_range(1..100), expires, &payment)
                });
                next_id += 1;
            }
            if rng.random_bool(0.2) {
                let payment = account
                    .payments
                    .entry(format!("pi_{}", rng.random_range(0..4)));
                let paid = 1000;
                let state = payment.or_insert(Payment { paid, refunded: 0 });
                state.refunded = rng.random_range(0..=paid).max(state.refunded);
            }
            let requests: Vec<Request> = (0..rng.random_range(0..6))
                .map(|_| {
                    let key = format!("k{}", rng.random_range(0..30));
                    match rng.random_range(0..5) {
                        0 => grant(
                            rng.random_range(1..50),
                            rng.random_bool(0.3)
                                .then(|| now + rng.random_range(-5..100)),
                            &key,
                        ),
                        1 => Request::Settle,
                        _ => consume(rng.random_range(1..30), &key),
                    }
                })
                .collect();
            let grants_before: Vec<(Option<i64>, Credits)> = account
                .grants
                .iter()
                .map(|g| (g.id, g.taken_back))
                .collect();
            let expired_pending = account
                .grants
                .iter()
                .any(|g| !g.credited && g.is_expired(now));
            let decided = decide(&mut account, now, &requests);
            assert_eq!(decided.answers.len(), requests.len());
            let mut saw = |what, yes: bool| *seen.entry(what).or_default() += usize::from(yes);
            saw("debt", account.debt > 0);
            saw("expired before credited", expired_pending);
            for answer in &decided.answers {
                saw(
                    "refused: short",
                    matches!(answer, Answer::Insufficient { .. }),
                );
                saw("refused: expired", matches!(answer, Answer::AlreadyExpired));
            }
            for transaction in &decided.transactions {
                saw("take-back", transaction.kind == Kind::Refund);
                saw("expiry", transaction.kind == Kind::Expire);
            }
            for (request, answer) in requests.iter().zip(&decided.answers) {
                if let (Some(key), Answer::Done { .. }) = (request.key(), answer) {
                    let first = first_answers
                        .entry(key.to_owned())
                        .or_insert(answer.clone());
                    assert_eq!(
                        first, answer,
                        "seed {seed}: key {key} answered twice differently"
                    );
                }
                if let (Request::Consume { amount, .. }, Answer::Insufficient { balance }) =
                    (request, answer)
                {
                    assert!(balance < amount, "seed {seed}");
                }
            }
            for transaction in &decided.transactions {
                if transaction.kind == Kind::Consume {
                    assert!(transaction.balance_after >= 0, "seed {seed}: overdrawn");
                }
            }
            let keyed: Vec<_> = decided
                .transactions
                .iter()
                .filter_map(|t| t.idempotency_key.as_ref())
                .collect();
            let mut unique = keyed.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(
                keyed.len(),
                unique.len(),
                "seed {seed}: a key debited twice"
            );
            history.extend(decided.transactions);
            assert!(sums_up(&account, &history), "seed {seed}");
            assert!(account.is_consistent(now), "seed {seed}: {account:?}");
            assert!(account.debt >= 0, "seed {seed}");
            for grant in &account.grants {
                assert!(grant.remaining >= 0 && grant.expired >= 0, "seed {seed}");
                assert!(grant.taken_back <= grant.amount, "seed {seed}");
            }
            for (before, grant) in grants_before.iter().zip(&account.grants) {
                assert!(grant.taken_back >= before.1, "seed {seed}: refund undone");
            }
        }
    }
    for what in [
        "debt",
        "expired before credited",
        "refused: short",
        "refused: expired",
        "take-back",
        "expiry",
    ] {
        assert!(
            seen.get(what).copied().unwrap_or(0) >= 10,
            "the histories held too few of {what}: {seen:?}"
        );
    }
}
