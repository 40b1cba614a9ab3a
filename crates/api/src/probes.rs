//! Liveness and readiness probes for load balancers and orchestrators.

use billing_sync_store::Store;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags, payload::Json};

#[derive(Tags)]
enum ApiTags {
    /// Liveness and readiness of the service.
    Probes,
}

/// The body of a probe answer.
#[derive(Debug, Object)]
pub struct ProbeStatus {
    /// `ok` or `unavailable`.
    pub status: String,
    /// Why the service is not ready, when it is not.
    #[oai(skip_serializing_if_is_none)]
    pub reason: Option<String>,
}

/// The answer of `GET /healthz`.
#[derive(ApiResponse)]
pub enum HealthResponse {
    /// The process is running.
    #[oai(status = 200)]
    Alive(Json<ProbeStatus>),
}

/// The answer of `GET /readyz`.
#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// The database answers: the service can take traffic.
    #[oai(status = 200)]
    Ready(Json<ProbeStatus>),
    /// The database does not answer. The reason says only that (the log has the detail):
    /// a probe is public, and the database's address is nobody's business.
    #[oai(status = 503)]
    NotReady(Json<ProbeStatus>),
}

/// The probe operations.
pub struct ProbesApi {
    store: Store,
}

impl ProbesApi {
    /// Probes that check `store` for readiness.
    pub fn new(store: Store) -> Self {
        ProbesApi { store }
    }
}

#[OpenApi(tag = "ApiTags::Probes")]
impl ProbesApi {
    /// Liveness: 200 for as long as the process runs.
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> HealthResponse {
        HealthResponse::Alive(Json(ProbeStatus {
            status: "ok".into(),
            reason: None,
        }))
    }

    /// Readiness: 200 when the database answers, 503 with a reason otherwise.
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self) -> ReadyResponse {
        match self.store.ping().await {
            Ok(()) => ReadyResponse::Ready(Json(ProbeStatus {
                status: "ok".into(),
                reason: None,
            })),
            Err(err) => {
                tracing::warn!(error = %err, "readiness check failed");
                ReadyResponse::NotReady(Json(ProbeStatus {
                    status: "unavailable".into(),
                    reason: Some("database unavailable".into()),
                }))
            }
        }
    }
}
