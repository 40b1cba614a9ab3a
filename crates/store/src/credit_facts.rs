//! What webhooks record for the credit ledger: credits bought (pending grants) and what
//! refunded charges amount to. Plain facts, written with the rest of an event's changes; the
//! ledger's writer ([`crate::credits`]) credits and takes back under the account's lock.

use chrono::Utc;
use sea_orm::sea_query::{CaseStatement, Expr, ExprTrait, InsertStatement, OnConflict, Query};

use crate::entities::{credit_grants as grants, credit_payments as payments};
use billing_sync_credits::GrantSource;
use billing_sync_projection::{ChargeRefund, CreditPurchase, PurchaseSource};

/// The ledger's name for where a purchase came from.
fn grant_source(source: PurchaseSource) -> GrantSource {
    match source {
        PurchaseSource::Checkout => GrantSource::Checkout,
        PurchaseSource::Invoice => GrantSource::Invoice,
    }
}

/// `INSERT … ON CONFLICT (reference) DO NOTHING`: each purchase becomes one pending grant, once,
/// however often its event is delivered or replayed.
pub(crate) fn purchases_insert<'a>(
    purchases: impl Iterator<Item = &'a CreditPurchase>,
) -> InsertStatement {
    use grants::Column as C;
    let now = Utc::now().timestamp();
    let mut statement = Query::insert();
    statement.into_table(grants::Entity).columns([
        C::OrganizationId,
        C::CustomerId,
        C::Source,
        C::Reference,
        C::PriceId,
        C::Quantity,
        C::Amount,
        C::ExpiresAt,
        C::CreatedAt,
        C::PaymentId,
        C::Credited,
    ]);
    for purchase in purchases {
        statement.values_panic([
            Expr::val(purchase.organization_id.clone()),
            Expr::val(purchase.customer_id.clone()),
            Expr::val(grant_source(purchase.source).as_str()),
            Expr::val(purchase.reference.clone()),
            Expr::val(purchase.price_id.clone()),
            Expr::val(purchase.quantity),
            Expr::val(purchase.credits),
            Expr::val(purchase.expires_at),
            Expr::val(now),
            Expr::val(purchase.payment_id.clone()),
            Expr::val(false),
        ]);
    }
    statement.on_conflict(OnConflict::column(C::Reference).do_nothing().to_owned());
    statement
}

/// `INSERT … ON CONFLICT (charge_id) DO UPDATE`, keeping the largest refunded amount seen: a
/// refund's amounts are cumulative, so an older event delivered late changes nothing.
pub(crate) fn refunds_upsert<'a>(
    refunds: impl Iterator<Item = &'a ChargeRefund>,
) -> InsertStatement {
    use payments::Column as C;
    let mut statement = Query::insert();
    statement.into_table(payments::Entity).columns([
        C::ChargeId,
        C::PaymentId,
        C::Paid,
        C::Refunded,
    ]);
    for refund in refunds {
        statement.values_panic([
            Expr::val(refund.charge_id.clone()),
            Expr::val(refund.payment_id.clone()),
            Expr::val(refund.paid),
            Expr::val(refund.refunded),
        ]);
    }
    let stored = Expr::col((payments::Entity, C::Refunded));
    let incoming = Expr::col((sea_orm::sea_query::Alias::new("excluded"), C::Refunded));
    let larger = CaseStatement::new()
        .case(incoming.clone().gt(stored.clone()), incoming)
        .finally(stored);
    statement.on_conflict(
        OnConflict::column(C::ChargeId)
            .value(C::Refunded, larger)
            .to_owned(),
    );
    statement
}
