//! Lenient reading of webhook JSON: only the fields we project are typed, and a missing
//! optional field is `None`, never an error, so new source fields never break ingestion.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// The text at `field`, if it is a string.
pub(crate) fn text(value: &Value, field: &str) -> Option<String> {
    value.get(field)?.as_str().map(str::to_owned)
}

/// The text at `field`, which the projection cannot do without.
pub(crate) fn required_text(value: &Value, field: &str, what: &str) -> Result<String, String> {
    text(value, field).ok_or_else(|| format!("{what} has no string `{field}`"))
}

/// The integer at `field`.
pub(crate) fn integer(value: &Value, field: &str) -> Option<i64> {
    value.get(field)?.as_i64()
}

/// The boolean at `field`, `false` when absent.
pub(crate) fn flag(value: &Value, field: &str) -> bool {
    value.get(field).and_then(Value::as_bool).unwrap_or(false)
}

/// The earliest time PostgreSQL's `timestamptz` holds (4714-11-24 BC, Julian day 0), in unix
/// seconds; its latest (294276 AD) is past the latest chrono holds.
const EARLIEST_STORABLE: i64 = -210_866_803_200;

/// Unix seconds as a UTC time; `None` (as if absent) for a time no database column can hold,
/// so that a signed event with an absurd date is still recorded and projected on both backends.
pub(crate) fn unix_seconds(seconds: i64) -> Option<DateTime<Utc>> {
    if seconds < EARLIEST_STORABLE {
        return None;
    }
    DateTime::from_timestamp(seconds, 0)
}

/// The unix-seconds time at `field`.
pub(crate) fn time(value: &Value, field: &str) -> Option<DateTime<Utc>> {
    integer(value, field).and_then(unix_seconds)
}

/// An id that Stripe sends either as a string or, when expanded, as an object with `id`.
pub(crate) fn id_or_object(value: &Value, field: &str) -> Option<String> {
    match value.get(field)? {
        Value::String(id) => Some(id.clone()),
        Value::Object(object) => object.get("id")?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// `value.metadata[key]`, when it is a non-empty string.
pub(crate) fn metadata(value: &Value, key: &str) -> Option<String> {
    value
        .get("metadata")?
        .get(key)?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::unix_seconds;

    #[test]
    fn times_a_database_cannot_hold_are_absent() {
        assert!(unix_seconds(-62_135_596_801).is_some(), "1 BC is kept");
        assert!(unix_seconds(-210_866_803_200).is_some());
        assert!(unix_seconds(-210_866_803_201).is_none());
        assert!(unix_seconds(i64::MIN).is_none());
        assert!(unix_seconds(i64::MAX).is_none());
    }
}
