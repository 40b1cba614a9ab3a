//! The one JSON body of every error answer billing-sync gives: the API's operations document it
//! (poem-openapi's `Object`), the webhook routes write the same type as bytes. The request's id
//! is filled by the server's request-id middleware, which assigns it, so that no code building
//! an error has to carry the request.

use poem_openapi::Object;
use poem_openapi::types::ToJSON;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ErrorBody {
    /// A stable, machine-readable code: `UNAUTHORIZED`, `FORBIDDEN`, `VALIDATION_ERROR`,
    /// `NOT_FOUND`, `CONFLICT`, `TOO_MANY_REQUESTS`, `INTERNAL_ERROR` or `UNAVAILABLE`; credits'
    /// writes add `INSUFFICIENT_CREDITS` and `IDEMPOTENCY_KEY_REUSED`. Each operation documents
    /// the ones it answers.
    pub code: String,
    /// What went wrong and what to do, for the caller.
    pub message: String,
    /// The request's id, as in the `X-Request-Id` header (the caller's own when it sent one):
    /// quote it when asking for support; the server's log lines about the request carry it.
    pub request_id: Option<String>,
}

impl ErrorBody {
    /// A body with `code` and `message`; the request id is added where the request is known.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorBody {
            code: code.into(),
            message: message.into(),
            request_id: None,
        }
    }

    /// The body as JSON bytes, for answers written outside poem-openapi's operations.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        self.to_json_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_request_id_is_left_out_and_a_known_one_written() {
        let mut body = ErrorBody::new("FORBIDDEN", "no");
        assert_eq!(
            String::from_utf8(body.to_json_bytes()).unwrap(),
            r#"{"code":"FORBIDDEN","message":"no"}"#
        );
        body.request_id = Some("req-1".into());
        assert_eq!(
            String::from_utf8(body.to_json_bytes()).unwrap(),
            r#"{"code":"FORBIDDEN","message":"no","request_id":"req-1"}"#
        );
    }
}
