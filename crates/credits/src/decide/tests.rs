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

fn reserve(amount: Credits, seconds: UnixSeconds, key: &str) -> Request {
    Request::Reserve {
        amount,
        seconds,
        key: key.to_owned(),
        reason: None,
    }
}

fn capture(reservation: i64, amount: Credits) -> Request {
    Request::Capture {
        reservation,
        amount,
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
fn a_reservation_holds_credits_no_consumption_can_spend_and_its_capture_returns_the_rest() {
    let mut account = Account::default();
    let mut history = decide(&mut account, NOW, &[grant(100, None, "top-up")]).transactions;
    let decided = decide(
        &mut account,
        NOW,
        &[
            reserve(70, 60, "job-1"),
            consume(40, "other"),
            reserve(70, 60, "job-1"),
        ],
    );
    let held = Answer::Reserved {
        reservation: 2,
        expires_at: NOW + 60,
        balance: 30,
    };
    assert_eq!(
        decided.answers,
        vec![held.clone(), Answer::Insufficient { balance: 30 }, held]
    );
    assert_eq!(account.held, 70);
    history.extend(decided.transactions);
    let decided = decide(
        &mut account,
        NOW + 5,
        &[
            capture(2, 50),
            capture(2, 50),
            capture(2, 60),
            consume(40, "other"),
        ],
    );
    let captured = Answer::ReservationSettled {
        reservation: 2,
        settled: Settled {
            how: Settlement::Captured(50),
            transaction: 3,
            balance_after: 50,
        },
    };
    assert_eq!(
        decided.answers,
        vec![
            captured.clone(),
            captured,
            Answer::ReservationAlreadySettled {
                settled: Settled {
                    how: Settlement::Captured(50),
                    transaction: 3,
                    balance_after: 50,
                }
            },
            Answer::Done {
                transaction: 4,
                balance: 10
            },
        ]
    );
    let kinds: Vec<_> = decided
        .transactions
        .iter()
        .map(|t| (t.kind, t.amount))
        .collect();
    assert_eq!(kinds, [(Kind::Capture, 20), (Kind::Consume, -40)]);
    assert_eq!(account.held, 0);
    assert_eq!(
        account.grants[0].remaining, 10,
        "50 captured and 40 consumed"
    );
    history.extend(decided.transactions);
    assert!(sums_up(&account, &history));
    assert!(account.is_consistent(NOW + 5));
}

#[test]
fn a_reservation_released_or_past_its_time_to_live_returns_whole_once() {
    let mut account = Account::default();
    decide(&mut account, NOW, &[grant(100, None, "top-up")]);
    decide(
        &mut account,
        NOW,
        &[reserve(30, 10, "a"), reserve(30, 100, "b"), capture(9, 1)],
    );
    assert_eq!(account.held, 60);
    let decided = decide(
        &mut account,
        NOW + 10,
        &[
            Request::Release { reservation: 3 },
            Request::Release { reservation: 3 },
            Request::Release { reservation: 2 },
            capture(2, 10),
            capture(3, 10),
            capture(99, 1),
            capture(4, 1),
        ],
    );
    let [first, expired] = [2, 3].map(|transaction| Settled {
        how: if transaction == 2 {
            Settlement::Expired
        } else {
            Settlement::Released
        },
        transaction: transaction + 2,
        balance_after: 40 + 30 * (transaction - 1),
    });
    // The settle runs first: reservation 2's time to live ended at NOW + 10.
    assert_eq!(first.how, Settlement::Expired);
    assert_eq!(
        decided.answers,
        vec![
            Answer::ReservationSettled {
                reservation: 3,
                settled: expired
            },
            Answer::ReservationSettled {
                reservation: 3,
                settled: expired
            },
            // Releasing one that expired asks for what already happened.
            Answer::ReservationSettled {
                reservation: 2,
                settled: first
            },
            Answer::ReservationAlreadySettled { settled: first },
            Answer::ReservationAlreadySettled { settled: expired },
            Answer::NoSuchReservation,
            // A number of a transaction that is not a hold is no reservation either.
            Answer::NoSuchReservation,
        ]
    );
    assert_eq!((account.held, account.balance), (0, 100));
    let reasons: Vec<_> = decided
        .transactions
        .iter()
        .map(|t| (t.kind, t.amount))
        .collect();
    assert_eq!(reasons, [(Kind::Release, 30), (Kind::Release, 30)]);
    assert!(account.is_consistent(NOW + 10));
}

#[test]
fn a_capture_of_more_than_the_hold_is_refused_and_changes_nothing() {
    let mut account = Account::default();
    decide(
        &mut account,
        NOW,
        &[grant(100, None, "top-up"), reserve(10, 60, "a")],
    );
    let before = account.clone();
    let decided = decide(&mut account, NOW, &[capture(2, 11)]);
    assert_eq!(
        decided.answers,
        vec![Answer::CaptureExceedsHold { held: 10 }]
    );
    assert!(decided.transactions.is_empty());
    assert_eq!(account, before);
}

#[test]
fn held_credits_do_not_expire_while_held_and_are_written_off_when_released() {
    let mut account = Account::default();
    decide(
        &mut account,
        NOW,
        &[
            grant(100, Some(NOW + 10), "expiring"),
            grant(20, None, "lasting"),
            reserve(110, 3600, "job"),
        ],
    );
    // The expiring grant's 100 expire, but the hold needs 90 of them beyond the lasting 20.
    let decided = decide(&mut account, NOW + 20, &[Request::Settle]);
    let moved: Vec<_> = decided
        .transactions
        .iter()
        .map(|t| (t.kind, t.amount))
        .collect();
    assert_eq!(moved, [(Kind::Expire, -10)]);
    assert_eq!((account.balance, account.held), (0, 110));
    assert!(account.is_consistent(NOW + 20));
    // A capture spends the expired credits kept for it first; what it does not spend of
    // them is written off, and the lasting grant is left whole.
    let decided = decide(&mut account, NOW + 30, &[capture(3, 60)]);
    let moved: Vec<_> = decided
        .transactions
        .iter()
        .map(|t| (t.kind, t.amount))
        .collect();
    assert_eq!(moved, [(Kind::Capture, 50), (Kind::Expire, -30)]);
    let remaining: Vec<_> = account.grants.iter().map(|g| g.remaining).collect();
    assert_eq!(remaining, [0, 20]);
    assert_eq!((account.balance, account.held), (20, 0));
    assert!(account.is_consistent(NOW + 30));
}

#[test]
fn a_refund_of_held_credits_leaves_a_capture_in_debt() {
    let mut account = Account {
        grants: vec![pending(1, 100, None, "pi_1")],
        ..Account::default()
    };
    decide(&mut account, NOW, &[reserve(100, 60, "job")]);
    account.payments.insert(
        "pi_1".into(),
        Payment {
            paid: 1000,
            refunded: 1000,
        },
    );
    decide(&mut account, NOW + 1, &[Request::Settle]);
    assert_eq!(
        (account.balance, account.held, account.debt),
        (-100, 100, 0)
    );
    decide(&mut account, NOW + 2, &[capture(2, 40)]);
    assert_eq!((account.balance, account.held, account.debt), (-40, 0, 40));
    assert!(account.is_consistent(NOW + 2));
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

/// Counts a settled reservation's kind in `seen`.
fn saw_settled(seen: &mut HashMap<&str, usize>, how: Settlement) {
    *seen.entry(how.as_str()).or_default() += 1;
}

/// Random batches of everything the ledger does, checking after each that the balance is the
/// sum of the transactions and the grants' remaining less the debt, that no consumption
/// overdraws, that a refund never takes back more than its share, and that a repeated key
/// never debits twice, that what is held is the open reservations' sum and is covered, and that
/// a reservation is settled once, never captured past its hold. The histories are checked to
/// have held what the rules are about: debt, take-backs, refusals, expiries, grants refused as
/// already expired, allowances that expired before they were credited, and reservations held,
/// captured, released, expired and refused.
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
                    // A number that is often a reservation's, sometimes not.
                    let number = rng.random_range(1..=account.last_sequence.max(1) + 2);
                    match rng.random_range(0..8) {
                        5 => reserve(rng.random_range(1..40), rng.random_range(1..120), &key),
                        6 => capture(number, rng.random_range(0..40)),
                        7 => Request::Release {
                            reservation: number,
                        },
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
            let settled_before: HashMap<i64, Settled> = account
                .reservations
                .values()
                .filter_map(|r| Some((r.number, r.settled?)))
                .collect();
            let decided = decide(&mut account, now, &requests);
            assert_eq!(decided.answers.len(), requests.len());
            for (number, settled) in &settled_before {
                assert_eq!(
                    account.reservations[number].settled,
                    Some(*settled),
                    "seed {seed}: reservation {number} settled twice"
                );
            }
            for reservation in account.reservations.values() {
                if let Some(settled) = reservation.settled {
                    assert!(settled.how.captured() <= reservation.amount, "seed {seed}");
                    saw_settled(&mut seen, settled.how);
                }
            }
            let mut saw = |what, yes: bool| *seen.entry(what).or_default() += usize::from(yes);
            saw("debt", account.debt > 0);
            saw("expired before credited", expired_pending);
            for answer in &decided.answers {
                saw(
                    "refused: short",
                    matches!(answer, Answer::Insufficient { .. }),
                );
                saw("refused: expired", matches!(answer, Answer::AlreadyExpired));
                saw("hold", matches!(answer, Answer::Reserved { .. }));
                saw(
                    "refused: reservation settled",
                    matches!(answer, Answer::ReservationAlreadySettled { .. }),
                );
                saw(
                    "refused: capture past hold",
                    matches!(answer, Answer::CaptureExceedsHold { .. }),
                );
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
                if matches!(transaction.kind, Kind::Consume | Kind::Hold) {
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
        "hold",
        "refused: reservation settled",
        "refused: capture past hold",
        "captured",
        "released",
        "expired",
    ] {
        assert!(
            seen.get(what).copied().unwrap_or(0) >= 10,
            "the histories held too few of {what}: {seen:?}"
        );
    }
}
