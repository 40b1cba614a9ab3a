//! The credit ledger as the API drives it — each request through the batching writer (several
//! organizations' at once, so that they share batches), each balance through the read shortcut —
//! against the rules applied to a plain in-memory account: the same answers, the same balance,
//! and every stored transaction's amount and balance after it as the rules wrote them.

use std::collections::BTreeMap;
use std::sync::Arc;

use billing_sync_api::access::Access;
use billing_sync_api::credits::{Credits, CreditsError, Held, Recorded, ReservationState};
use billing_sync_credits::{Account, Answer, Request, Transaction, decide};
use billing_sync_testkit::state::migrated_store;
use billing_sync_testkit::{TestDatabase, each_backend};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

each_backend!(random_requests_through_the_writer_and_the_read_shortcut_agree_with_the_rules);

const ORGANIZATIONS: [&str; 3] = ["org_a", "org_b", "org_c"];
const STEPS: usize = 40;

/// What the API answered, in the rules' terms: `Done` for a recorded consume or grant, the
/// refusals as the rules name them, a reservation by its number and balance (its time to live
/// is the clock's, which the model does not share).
fn as_answer(result: Result<Recorded, CreditsError>) -> Answer {
    match result {
        Ok(Recorded {
            transaction,
            balance,
        }) => Answer::Done {
            transaction,
            balance,
        },
        Err(err) => refusal(err),
    }
}

fn reservation_answer(result: Result<ReservationState, CreditsError>) -> Answer {
    match result {
        Ok(ReservationState {
            reservation,
            state: Held::Until(_),
            balance,
        }) => Answer::Reserved {
            reservation,
            expires_at: 0,
            balance,
        },
        Ok(ReservationState {
            reservation,
            state: Held::Settled(settled),
            ..
        }) => Answer::ReservationSettled {
            reservation,
            settled,
        },
        Err(err) => refusal(err),
    }
}

fn refusal(err: CreditsError) -> Answer {
    match err {
        CreditsError::Insufficient { balance } => Answer::Insufficient { balance },
        CreditsError::KeyReused => Answer::KeyReused,
        CreditsError::NoSuchReservation => Answer::NoSuchReservation,
        CreditsError::AlreadySettled(settled) => Answer::ReservationAlreadySettled { settled },
        CreditsError::Invalid(message) if message.contains("more than the reservation holds") => {
            Answer::CaptureExceedsHold { held: -1 }
        }
        other => panic!("an answer the rules never give: {other}"),
    }
}

/// The rules' answer, with what the API does not carry left out as [`reservation_answer`] and
/// [`refusal`] leave it out.
fn comparable(answer: Answer) -> Answer {
    match answer {
        Answer::Reserved {
            reservation,
            balance,
            ..
        } => Answer::Reserved {
            reservation,
            expires_at: 0,
            balance,
        },
        Answer::CaptureExceedsHold { .. } => Answer::CaptureExceedsHold { held: -1 },
        other => other,
    }
}

async fn submit(credits: &Credits, organization: &str, request: &Request) -> Answer {
    match request {
        Request::Consume { amount, key, .. } => {
            as_answer(credits.consume(organization, *amount, key, None).await)
        }
        Request::Grant { amount, key, .. } => {
            as_answer(credits.grant(organization, *amount, None, key, None).await)
        }
        Request::Reserve {
            amount,
            seconds,
            key,
            ..
        } => reservation_answer(
            credits
                .reserve(organization, *amount, *seconds, key, None)
                .await,
        ),
        Request::Capture {
            reservation,
            amount,
        } => reservation_answer(credits.capture(organization, *reservation, *amount).await),
        Request::Release { reservation } => {
            reservation_answer(credits.release(organization, *reservation).await)
        }
        Request::Settle => unreachable!("reads go through the shortcut"),
    }
}

fn random_request(rng: &mut StdRng, account: &Account) -> Request {
    let key = format!("k{}", rng.random_range(0..12));
    // Mostly a reservation of the organization's (open or settled), sometimes any number.
    let reservations: Vec<i64> = account.reservations.keys().copied().collect();
    let number = if !reservations.is_empty() && rng.random_bool(0.8) {
        reservations[rng.random_range(0..reservations.len())]
    } else {
        rng.random_range(1..=account.last_sequence + 2)
    };
    match rng.random_range(0..6) {
        0 | 1 => Request::Grant {
            amount: rng.random_range(1..60),
            expires_at: None,
            key,
            reason: None,
        },
        2 => Request::Consume {
            amount: rng.random_range(1..25),
            key,
            reason: None,
        },
        3 => Request::Reserve {
            amount: rng.random_range(1..25),
            // Longer than the test: expiry is the rules' test's, on a clock it controls.
            seconds: 3600,
            key,
            reason: None,
        },
        4 => Request::Capture {
            reservation: number,
            amount: rng.random_range(0..25),
        },
        _ => Request::Release {
            reservation: number,
        },
    }
}

async fn random_requests_through_the_writer_and_the_read_shortcut_agree_with_the_rules(
    db: TestDatabase,
) {
    let store = migrated_store(&db.url).await;
    let credits = Credits::new(
        Arc::new(Access::new(store.clone(), None)),
        None,
        "credits".into(),
    );
    let mut models: BTreeMap<&str, (Account, Vec<Transaction>)> = ORGANIZATIONS
        .iter()
        .map(|organization| (*organization, Default::default()))
        .collect();
    let mut rng = StdRng::seed_from_u64(20261205);
    for step in 0..STEPS {
        // Each organization's requests in order; the organizations at once, sharing batches.
        let plans: Vec<(&str, Vec<Request>)> = ORGANIZATIONS
            .iter()
            .map(|organization| {
                let account = &models[organization].0;
                let requests = (0..rng.random_range(1..5))
                    .map(|_| random_request(&mut rng, account))
                    .collect();
                (*organization, requests)
            })
            .collect();
        let answered = futures::future::join_all(plans.iter().map(|(organization, requests)| {
            let credits = &credits;
            async move {
                let mut answers = Vec::new();
                for request in requests {
                    answers.push(submit(credits, organization, request).await);
                }
                answers
            }
        }))
        .await;
        let now = chrono::Utc::now().timestamp();
        for ((organization, requests), answers) in plans.iter().zip(answered) {
            let (account, history) = models.get_mut(organization).expect("a model");
            for (request, answer) in requests.iter().zip(answers) {
                let decided = decide(account, now, std::slice::from_ref(request));
                let expected = comparable(decided.answers[0].clone());
                assert_eq!(answer, expected, "step {step}, {organization}: {request:?}");
                history.extend(decided.transactions);
            }
            assert_eq!(
                credits.balance(organization).await.expect("a balance"),
                account.balance,
                "step {step}, {organization}: the read shortcut's balance"
            );
            let stored: Vec<(i64, String, i64, i64)> = store
                .credit_transactions(organization)
                .await
                .expect("the ledger")
                .into_iter()
                .map(|t| (t.sequence, t.kind, t.amount, t.balance_after))
                .collect();
            let modelled: Vec<(i64, String, i64, i64)> = history
                .iter()
                .map(|t| {
                    (
                        t.sequence,
                        t.kind.as_str().to_owned(),
                        t.amount,
                        t.balance_after,
                    )
                })
                .collect();
            assert_eq!(stored, modelled, "step {step}, {organization}: the ledger");
        }
    }
    // The histories held what the rules are about.
    use billing_sync_credits::Kind;
    for kind in [
        Kind::Adjustment,
        Kind::Consume,
        Kind::Hold,
        Kind::Capture,
        Kind::Release,
    ] {
        let count = models
            .values()
            .flat_map(|(_, history)| history)
            .filter(|t| t.kind == kind)
            .count();
        assert!(count >= 3, "too few {kind:?} transactions: {count}");
    }
}
