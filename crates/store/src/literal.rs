//! WriteContext a built statement's values into its text as PostgreSQL literals, for the messages
//! that send several statements at once (the simple query protocol takes no parameters).
//!
//! sea-query can render a statement with its values itself, but escapes character by character
//! and formats times through `strftime`: with a webhook's payload in every ledger row that was
//! the largest part of the writer's CPU. Here a string without a quote, a backslash or a control
//! character (nearly every payload) is copied whole.

use std::fmt::Write;

use chrono::{Datelike, Timelike};
use sea_orm::sea_query::{PostgresQueryBuilder, QueryBuilder, Value, Values};

/// Appends `sql` (as sea-query built it for PostgreSQL, with `$1`, `$2`… placeholders) to `out`
/// with each placeholder replaced by its value as a literal. Quoted identifiers and literals
/// already in the text are copied as they are.
pub(crate) fn write_statement(out: &mut String, sql: &str, values: &Values) {
    // Room for every value (escaping aside), so that a payload is copied once, not regrown.
    let room: usize = values
        .0
        .iter()
        .map(|value| match value {
            Value::String(Some(text)) => text.len() + 3,
            _ => 32,
        })
        .sum();
    out.reserve(sql.len() + room);
    let bytes = sql.as_bytes();
    let mut copied = 0;
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            quote @ (b'"' | b'\'') => {
                // Skip to the closing quote; a doubled quote inside stays inside.
                at += 1;
                while at < bytes.len() {
                    if bytes[at] == quote {
                        if bytes.get(at + 1) == Some(&quote) {
                            at += 2;
                            continue;
                        }
                        break;
                    }
                    at += 1;
                }
                at += 1;
            }
            b'$' => {
                let digits = bytes[at + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                let number = sql[at + 1..at + 1 + digits].parse::<usize>().ok();
                match number.and_then(|n| values.0.get(n.checked_sub(1)?)) {
                    Some(value) => {
                        out.push_str(&sql[copied..at]);
                        write_value(out, value);
                        at += 1 + digits;
                        copied = at;
                    }
                    None => at += 1,
                }
            }
            _ => at += 1,
        }
    }
    out.push_str(&sql[copied..]);
}

/// `value` as a PostgreSQL literal.
fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::String(Some(text)) => write_string(out, text),
        Value::Bool(Some(flag)) => out.push_str(if *flag { "TRUE" } else { "FALSE" }),
        Value::SmallInt(Some(n)) => write!(out, "{n}").expect("writing to a String"),
        Value::Int(Some(n)) => write!(out, "{n}").expect("writing to a String"),
        Value::BigInt(Some(n)) => write!(out, "{n}").expect("writing to a String"),
        Value::ChronoDateTimeUtc(Some(at)) => {
            // PostgreSQL has no year 0 and no negative years: chrono's (proleptic ISO) year 0
            // is 1 BC, year -1 is 2 BC, and so on.
            let (year, era) = match at.year() {
                year if year >= 1 => (year, ""),
                year => (1 - year, " BC"),
            };
            write!(
                out,
                "'{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00{era}'",
                year,
                at.month(),
                at.day(),
                at.hour(),
                at.minute(),
                at.second(),
                at.nanosecond() % 1_000_000_000 / 1_000,
            )
            .expect("writing to a String")
        }
        Value::String(None)
        | Value::Bool(None)
        | Value::SmallInt(None)
        | Value::Int(None)
        | Value::BigInt(None)
        | Value::ChronoDateTimeUtc(None) => out.push_str("NULL"),
        other => out.push_str(&PostgresQueryBuilder.value_to_string(other)),
    }
}

/// `text` as a string literal: `'…'` when nothing in it needs escaping, else an escape string
/// `E'…'` (which reads backslashes the same whatever `standard_conforming_strings` says). A
/// quote is doubled, never written `\'`, which a server with `backslash_quote = off` refuses.
fn write_string(out: &mut String, text: &str) {
    let plain = |b: &u8| *b != b'\'' && *b != b'\\' && *b >= 0x20 && *b != 0x7f;
    if text.as_bytes().iter().all(plain) {
        out.reserve(text.len() + 2);
        out.push('\'');
        out.push_str(text);
        out.push('\'');
        return;
    }
    out.push_str("E'");
    let mut run = 0;
    for (at, byte) in text.bytes().enumerate() {
        if plain(&byte) {
            continue;
        }
        out.push_str(&text[run..at]);
        match byte {
            b'\'' => out.push_str("''"),
            b'\\' => out.push_str("\\\\"),
            control => write!(out, "\\{control:03o}").expect("writing to a String"),
        }
        run = at + 1;
    }
    out.push_str(&text[run..]);
    out.push('\'');
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn statement(sql: &str, values: Vec<Value>) -> String {
        let mut out = String::new();
        write_statement(&mut out, sql, &Values(values));
        out
    }

    #[test]
    fn placeholders_take_their_values_in_order_of_number() {
        assert_eq!(
            statement(
                r#"INSERT INTO "t" ("a", "b", "c") VALUES ($1, $2, $10), ($3, $1, NULL)"#,
                vec![
                    Value::from("x"),
                    Value::BigInt(Some(-7)),
                    Value::Bool(Some(true)),
                    Value::String(None),
                    Value::SmallInt(Some(2)),
                    Value::Int(Some(3)),
                    Value::Int(None),
                    Value::Int(None),
                    Value::Int(None),
                    Value::from("ten"),
                ],
            ),
            r#"INSERT INTO "t" ("a", "b", "c") VALUES ('x', -7, 'ten'), (TRUE, 'x', NULL)"#
        );
    }

    #[test]
    fn dollars_inside_identifiers_and_literals_are_not_placeholders() {
        assert_eq!(
            statement(r#"SELECT "a$1", 'it''s $1', $1"#, vec![Value::from("v")]),
            r#"SELECT "a$1", 'it''s $1', 'v'"#
        );
    }

    #[test]
    fn strings_are_escaped_only_when_they_must_be() {
        let mut out = String::new();
        write_string(&mut out, r#"{"plain": "json é 😀"}"#);
        assert_eq!(out, r#"'{"plain": "json é 😀"}'"#);
        let mut out = String::new();
        write_string(&mut out, "O'Brien \\ \"q\" \t\n\u{1}\u{7f} é");
        assert_eq!(out, "E'O''Brien \\\\ \"q\" \\011\\012\\001\\177 é'");
    }

    #[test]
    fn times_are_written_to_the_microsecond_in_utc() {
        let at = chrono::Utc
            .with_ymd_and_hms(2026, 11, 23, 7, 5, 9)
            .single()
            .expect("a time")
            + chrono::Duration::microseconds(42);
        let mut out = String::new();
        write_value(&mut out, &Value::ChronoDateTimeUtc(Some(at)));
        assert_eq!(out, "'2026-11-23 07:05:09.000042+00'");
    }

    #[test]
    fn times_before_year_one_are_written_before_christ() {
        let mut out = String::new();
        let at = chrono::DateTime::from_timestamp(-62_135_596_801, 0).expect("a time");
        write_value(&mut out, &Value::ChronoDateTimeUtc(Some(at)));
        assert_eq!(out, "'0001-12-31 23:59:59.000000+00 BC'");
    }
}
