//! The app's backend's way in: the API key it sends (`BILLING_API_KEYS`), the paths that take
//! one, and what a request there without one is told. Its own module, which the framework's
//! refusals (`http`) and the operations that take a key (credits, events) both use, so that
//! neither needs the other.

use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;

/// The paths whose operations the app's backend calls with an API key: a request there with no
/// key is told about API keys, not Clerk sessions.
pub const BACKEND_PATH_PREFIXES: [&str; 2] = ["/api/v1/credits", "/api/v1/organizations/"];

/// The paths of the ledger's writes, which take POST only (their operations, in `credits`, name
/// them again: poem-openapi's attributes take literals).
pub const WRITE_PATHS: [&str; 5] = [
    "/api/v1/credits/consume",
    "/api/v1/credits/grant",
    "/api/v1/credits/reserve",
    "/api/v1/credits/capture",
    "/api/v1/credits/release",
];

/// The 401 message of the backend's operations.
pub const API_KEY_REQUIRED: &str = "Authentication required: send one of the server's \
     BILLING_API_KEYS as `Authorization: Bearer <key>`.";

/// An API key of `BILLING_API_KEYS`, sent by the app's backend as `Authorization: Bearer <key>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer")]
pub struct BillingApiKey(Bearer);

impl BillingApiKey {
    /// The key as sent.
    pub fn token(&self) -> &str {
        &self.0.token
    }
}
