//! Reading only what a projection reads: a JSON value parsed with every field outside a given
//! shape skipped, so that a 3 KB Stripe subscription becomes a tree of the dozen fields its
//! projection reads instead of a few hundred nodes that are built, copied and dropped.
//! Skipped fields are still checked to be well-formed JSON, and allocate nothing.
//!
//! The shapes must name every field the Stripe projections read; `stripe_event` is checked to
//! project exactly what the whole tree projects (unit tests, the conformance tests on Stripe's
//! own fixtures, and the `stripe_projection` fuzz target).

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Which parts of a JSON value to keep.
#[derive(Debug)]
pub(crate) enum Shape {
    /// The whole value.
    Whole,
    /// Of an object, these fields (each with its own shape), the rest skipped; of an array,
    /// each element read with this shape; a scalar as it is.
    Fields(&'static [(&'static str, Shape)]),
}

/// `{id}` of an object that Stripe may also send as its bare id (expandable fields).
const ID_OR_EXPANDED: Shape = Shape::Fields(&[("id", Shape::Whole)]);

/// What `stripe::customer` reads.
pub(crate) const CUSTOMER: Shape = Shape::Fields(&[
    ("id", Shape::Whole),
    ("deleted", Shape::Whole),
    ("email", Shape::Whole),
    ("name", Shape::Whole),
    ("livemode", Shape::Whole),
    ("metadata", Shape::Whole),
]);

/// What `stripe::subscription` reads, the items' prices included.
pub(crate) const SUBSCRIPTION: Shape = Shape::Fields(&[
    ("id", Shape::Whole),
    ("customer", ID_OR_EXPANDED),
    ("status", Shape::Whole),
    ("cancel_at_period_end", Shape::Whole),
    ("cancel_at", Shape::Whole),
    ("canceled_at", Shape::Whole),
    ("ended_at", Shape::Whole),
    ("trial_end", Shape::Whole),
    ("current_period_start", Shape::Whole),
    ("current_period_end", Shape::Whole),
    ("livemode", Shape::Whole),
    ("metadata", Shape::Whole),
    (
        "items",
        Shape::Fields(&[(
            "data",
            Shape::Fields(&[
                ("id", Shape::Whole),
                ("quantity", Shape::Whole),
                ("current_period_start", Shape::Whole),
                ("current_period_end", Shape::Whole),
                (
                    "price",
                    Shape::Fields(&[("id", Shape::Whole), ("product", ID_OR_EXPANDED)]),
                ),
            ]),
        )]),
    ),
]);

/// What `stripe::checkout_link` and `stripe::checkout_purchase` read.
pub(crate) const CHECKOUT_SESSION: Shape = Shape::Fields(&[
    ("id", Shape::Whole),
    ("mode", Shape::Whole),
    ("payment_status", Shape::Whole),
    ("payment_intent", ID_OR_EXPANDED),
    ("customer", ID_OR_EXPANDED),
    ("client_reference_id", Shape::Whole),
    // When the session was made: a client reference must be unexpired then.
    ("created", Shape::Whole),
    ("livemode", Shape::Whole),
    ("metadata", Shape::Whole),
]);

/// What `stripe::product` reads.
pub(crate) const PRODUCT: Shape = Shape::Fields(&[
    ("id", Shape::Whole),
    ("name", Shape::Whole),
    ("description", Shape::Whole),
    ("active", Shape::Whole),
    (
        "marketing_features",
        Shape::Fields(&[("name", Shape::Whole)]),
    ),
    ("default_price", ID_OR_EXPANDED),
    ("livemode", Shape::Whole),
]);

/// What `stripe::price` reads.
pub(crate) const PRICE: Shape = Shape::Fields(&[
    ("id", Shape::Whole),
    ("product", ID_OR_EXPANDED),
    ("active", Shape::Whole),
    ("currency", Shape::Whole),
    ("unit_amount", Shape::Whole),
    ("lookup_key", Shape::Whole),
    ("nickname", Shape::Whole),
    (
        "recurring",
        Shape::Fields(&[("interval", Shape::Whole), ("interval_count", Shape::Whole)]),
    ),
    ("livemode", Shape::Whole),
]);

/// What `stripe::entitlements` reads.
pub(crate) const ENTITLEMENT_SUMMARY: Shape = Shape::Fields(&[
    ("customer", ID_OR_EXPANDED),
    (
        "entitlements",
        Shape::Fields(&[
            ("has_more", Shape::Whole),
            ("data", Shape::Fields(&[("lookup_key", Shape::Whole)])),
        ]),
    ),
    ("livemode", Shape::Whole),
]);

/// What `stripe::invoice_allowances` reads.
pub(crate) const INVOICE: Shape = Shape::Fields(&[
    ("id", Shape::Whole),
    ("customer", ID_OR_EXPANDED),
    ("metadata", Shape::Whole),
    ("payment_intent", ID_OR_EXPANDED),
    ("payments", Shape::Whole),
    (
        "parent",
        Shape::Fields(&[(
            "subscription_details",
            Shape::Fields(&[("metadata", Shape::Whole)]),
        )]),
    ),
    (
        "lines",
        Shape::Fields(&[
            ("has_more", Shape::Whole),
            (
                "data",
                Shape::Fields(&[
                    ("id", Shape::Whole),
                    ("type", Shape::Whole),
                    ("subscription", Shape::Whole),
                    ("proration", Shape::Whole),
                    ("quantity", Shape::Whole),
                    ("period", Shape::Whole),
                    ("price", ID_OR_EXPANDED),
                    ("pricing", Shape::Whole),
                    ("parent", Shape::Whole),
                ]),
            ),
        ]),
    ),
]);

/// What `stripe::charge_refund` reads.
pub(crate) const CHARGE: Shape = Shape::Fields(&[
    ("id", Shape::Whole),
    ("payment_intent", ID_OR_EXPANDED),
    ("amount", Shape::Whole),
    ("amount_captured", Shape::Whole),
    ("amount_refunded", Shape::Whole),
]);

/// `text` parsed as JSON, keeping only what `shape` names.
pub(crate) fn parse(text: &str, shape: &Shape) -> serde_json::Result<Value> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = Sparse(shape).deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// The seed that reads a value with a shape.
struct Sparse<'s>(&'s Shape);

impl<'de> DeserializeSeed<'de> for Sparse<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        match self.0 {
            Shape::Whole => serde::Deserialize::deserialize(deserializer),
            Shape::Fields(_) => deserializer.deserialize_any(self),
        }
    }
}

impl<'de> Visitor<'de> for Sparse<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Sparse(self.0))? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Shape::Fields(fields) = self.0 else {
            // `Whole` never reaches the visitor.
            return Ok(Value::Null);
        };
        let mut kept = Map::new();
        while let Some(Key(key)) = map.next_key()? {
            match fields.iter().find(|(name, _)| *name == key) {
                Some((_, shape)) => {
                    // A repeated key keeps its last value, as a whole tree would.
                    let value = map.next_value_seed(Sparse(shape))?;
                    kept.insert(key.into_owned(), value);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(kept))
    }
}

/// An object key, borrowed from the text unless it holds escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }
            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
            fn visit_string<E>(self, key: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_named_fields_are_kept_at_every_level() {
        let text = r#"{"id":"sub_1","plan":{"big":[1,2,3]},"items":{"object":"list",
            "data":[{"id":"si_1","price":{"id":"price_1","product":"prod_1","unit_amount":5},
            "metadata":{}}]},"metadata":{"organization_id":"org_1","x":{"y":1}},
            "customer":{"id":"cus_1","email":"a@example.com"}}"#;
        assert_eq!(
            parse(text, &SUBSCRIPTION).unwrap(),
            json!({"id": "sub_1",
                "items": {"data": [{"id": "si_1", "price": {"id": "price_1", "product": "prod_1"}}]},
                "metadata": {"organization_id": "org_1", "x": {"y": 1}},
                "customer": {"id": "cus_1"}})
        );
    }

    #[test]
    fn escaped_keys_and_repeated_keys_read_as_a_whole_tree_reads_them() {
        let text = r#"{"\u0069d":"cus_1","name":"a","name":"b","email":null}"#;
        let whole: Value = serde_json::from_str(text).unwrap();
        assert_eq!(parse(text, &CUSTOMER).unwrap(), whole);
    }

    #[test]
    fn malformed_json_in_a_skipped_field_is_still_refused() {
        assert!(parse(r#"{"id":"cus_1","skipped":[1,}"#, &CUSTOMER).is_err());
        assert!(parse(r#"{"id":"cus_1"} trailing"#, &CUSTOMER).is_err());
    }
}
