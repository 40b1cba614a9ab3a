//! What is wrong with a JSON request body the framework refused, named field by field. The
//! framework's own message says only what it expected ("Expected input type \"string\", found
//! null"), not of which field; the request schemas of the OpenAPI document say which fields are
//! required and of what type, so the body is read against them once it is refused.

use std::collections::BTreeMap;

use serde_json::Value;

/// A request body schema: its required fields and each field's JSON type.
#[derive(Clone, Debug, Default)]
struct BodySchema {
    required: Vec<String>,
    /// `string`, `integer`, `number`, `boolean`, `object`, `array`; absent: not checked.
    types: BTreeMap<String, String>,
}

/// The request body schemas of an OpenAPI document, by name.
#[derive(Clone, Debug, Default)]
pub struct RequestFields {
    schemas: BTreeMap<String, BodySchema>,
}

impl RequestFields {
    /// The object schemas of `document` (an OpenAPI document's JSON text).
    pub fn from_document(document: &str) -> Self {
        let Ok(document) = serde_json::from_str::<Value>(document) else {
            return RequestFields::default();
        };
        let components = &document["components"]["schemas"];
        let Some(all) = components.as_object() else {
            return RequestFields::default();
        };
        let schemas = all
            .iter()
            .filter_map(|(name, schema)| {
                let properties = schema["properties"].as_object()?;
                let required = schema["required"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect();
                let types = properties
                    .iter()
                    .filter_map(|(field, property)| {
                        Some((field.clone(), type_of(property, components)?))
                    })
                    .collect();
                Some((name.clone(), BodySchema { required, types }))
            })
            .collect();
        RequestFields { schemas }
    }

    /// What is wrong with `body` for the schema the framework's `refusal` names (`… while
    /// parsing "ConsumeRequest"`): each required field missing or null, each field of another
    /// type; `None` when that says nothing the refusal does not.
    pub fn explain(&self, refusal: &str, body: &[u8]) -> Option<String> {
        let name = schema_named(refusal)?;
        let schema = self.schemas.get(name)?;
        let body: Value = serde_json::from_slice(body).ok()?;
        let fields = body.as_object()?;
        let mut wrong = Vec::new();
        for field in &schema.required {
            if fields.get(field).is_none_or(Value::is_null) {
                wrong.push(format!("`{field}` is required"));
            }
        }
        for (field, value) in fields {
            let Some(expected) = schema.types.get(field) else {
                continue;
            };
            if !value.is_null() && !is_a(value, expected) {
                wrong.push(format!(
                    "`{field}` must be {} (found {value})",
                    article(expected)
                ));
            }
        }
        (!wrong.is_empty()).then(|| wrong.join("; "))
    }
}

/// The schema name in the framework's refusal: `occurred while parsing "X"` or `failed to
/// parse "X"`.
fn schema_named(refusal: &str) -> Option<&str> {
    ["while parsing \"", "failed to parse \""]
        .iter()
        .find_map(|marker| refusal.split_once(marker))
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(name, _)| name)
}

/// A property's JSON type, through one `$ref` or `allOf` of one (how poem-openapi writes a
/// field of a named type).
fn type_of(property: &Value, components: &Value) -> Option<String> {
    if let Some(kind) = property["type"].as_str() {
        return Some(kind.to_owned());
    }
    let reference = property["$ref"]
        .as_str()
        .or_else(|| property["allOf"][0]["$ref"].as_str())?;
    let name = reference.strip_prefix("#/components/schemas/")?;
    components[name]["type"].as_str().map(str::to_owned)
}

fn is_a(value: &Value, kind: &str) -> bool {
    match kind {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        _ => true,
    }
}

fn article(kind: &str) -> String {
    match kind {
        "integer" | "object" | "array" => format!("an {kind}"),
        "string" | "number" | "boolean" => format!("a {kind}"),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCUMENT: &str = r##"{"components": {"schemas": {
        "Text": {"type": "string", "pattern": "^[^\\u0000]*$"},
        "ConsumeRequest": {"type": "object",
            "required": ["organization_id", "amount", "idempotency_key"],
            "properties": {
                "organization_id": {"$ref": "#/components/schemas/Text"},
                "amount": {"type": "integer", "format": "int64"},
                "idempotency_key": {"allOf": [{"$ref": "#/components/schemas/Text"}]},
                "reason": {"$ref": "#/components/schemas/Text"}}}}}}"##;

    #[test]
    fn a_missing_or_mistyped_field_is_named() {
        let fields = RequestFields::from_document(DOCUMENT);
        let refusal = "parse request payload error: Expected input type \"string\", found \
                       null. (occurred while parsing \"ConsumeRequest\")";
        assert_eq!(
            fields.explain(refusal, br#"{"organization_id": "org_1", "amount": 3}"#),
            Some("`idempotency_key` is required".to_owned())
        );
        assert_eq!(
            fields.explain(
                refusal,
                br#"{"organization_id": 7, "amount": "3", "idempotency_key": null}"#
            ),
            Some(
                "`idempotency_key` is required; `amount` must be an integer (found \"3\"); \
                 `organization_id` must be a string (found 7)"
                    .to_owned()
            )
        );
        // Nothing to add: the body is as the schema says (the refusal was of something else).
        let whole = br#"{"organization_id": "o", "amount": 1, "idempotency_key": "k"}"#;
        assert_eq!(fields.explain(refusal, whole), None);
        assert_eq!(fields.explain("no schema named", whole), None);
        assert_eq!(fields.explain(refusal, b"not json"), None);
    }
}
