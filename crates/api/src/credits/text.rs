//! [`Text`]: a JSON string and nothing else. poem-openapi reads a `String` field from a JSON
//! number or boolean too (`1` becomes `"1"`), which the schema (`type: string`) does not allow:
//! an idempotency key or an organization id sent as a number is a caller's mistake, answered
//! 400, not silently accepted.

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use serde_json::Value;

/// The pattern of a string without NUL (an ECMA-262 regular expression, as OpenAPI's are).
const NO_NUL: &str = "^[^\\u0000]*$";

/// A JSON string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Text(pub String);

impl Type for Text {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        String::name()
    }

    /// A string without NUL, which the credits' ids, keys and reasons refuse (`pattern`: the
    /// document says what is checked).
    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            pattern: Some(NO_NUL.to_owned()),
            ..MetaSchema::new("string")
        }))
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl ParseFromJSON for Text {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            Value::String(text) => Ok(Text(text)),
            other => Err(ParseError::expected_type(other)),
        }
    }
}

impl ToJSON for Text {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_json_string_is_text() {
        assert_eq!(
            Text::parse_from_json(Some(Value::String("k1".into()))).ok(),
            Some(Text("k1".into()))
        );
        for value in [
            Value::Bool(false),
            serde_json::json!(1),
            Value::Null,
            serde_json::json!([]),
        ] {
            assert!(
                Text::parse_from_json(Some(value.clone())).is_err(),
                "{value}"
            );
        }
        assert!(Text::parse_from_json(None).is_err(), "absent");
    }
}
