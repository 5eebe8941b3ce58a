//! API errors as Kubernetes reports them (a `Status` with a reason, a message and, for
//! invalid objects, one cause per field), and their mapping onto gRPC codes.

use serde_json::{Value, json};

use crate::validation::{ErrorList, FieldError};

/// Kubernetes' `StatusReason` values this server produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The object does not exist.
    NotFound,
    /// The name is taken.
    AlreadyExists,
    /// A stale resourceVersion or a failed precondition.
    Conflict,
    /// The object failed validation.
    Invalid,
    /// The request itself is malformed.
    BadRequest,
    /// A resourceVersion or continue token that was compacted away.
    Expired,
    /// The request is too large.
    RequestEntityTooLarge,
    /// No or a wrong bearer token.
    Unauthorized,
    /// The operation is not allowed.
    Forbidden,
    /// The verb is not supported on this resource.
    MethodNotAllowed,
    /// The store cannot be reached, or a watcher fell behind.
    ServiceUnavailable,
    /// The store did not answer in time.
    Timeout,
    /// Refused for now; the same request may succeed later (an eviction a
    /// PodDisruptionBudget does not allow yet).
    TooManyRequests,
    /// Anything else.
    InternalError,
}

impl Reason {
    /// The reason as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotFound => "NotFound",
            Reason::AlreadyExists => "AlreadyExists",
            Reason::Conflict => "Conflict",
            Reason::Invalid => "Invalid",
            Reason::BadRequest => "BadRequest",
            Reason::Expired => "Expired",
            Reason::RequestEntityTooLarge => "RequestEntityTooLarge",
            Reason::Unauthorized => "Unauthorized",
            Reason::Forbidden => "Forbidden",
            Reason::MethodNotAllowed => "MethodNotAllowed",
            Reason::ServiceUnavailable => "ServiceUnavailable",
            Reason::Timeout => "Timeout",
            Reason::TooManyRequests => "TooManyRequests",
            Reason::InternalError => "InternalError",
        }
    }

    /// The HTTP code Kubernetes pairs with the reason.
    pub fn http_code(self) -> u16 {
        match self {
            Reason::NotFound => 404,
            Reason::AlreadyExists | Reason::Conflict => 409,
            Reason::Invalid => 422,
            Reason::BadRequest => 400,
            Reason::Expired => 410,
            Reason::RequestEntityTooLarge => 413,
            Reason::Unauthorized => 401,
            Reason::Forbidden => 403,
            Reason::MethodNotAllowed => 405,
            Reason::ServiceUnavailable => 503,
            Reason::Timeout => 504,
            Reason::TooManyRequests => 429,
            Reason::InternalError => 500,
        }
    }

    /// The gRPC code the API maps the reason to (documented in resources.proto).
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            Reason::NotFound => tonic::Code::NotFound,
            Reason::AlreadyExists => tonic::Code::AlreadyExists,
            Reason::Conflict => tonic::Code::Aborted,
            Reason::Invalid | Reason::BadRequest => tonic::Code::InvalidArgument,
            Reason::Expired => tonic::Code::OutOfRange,
            Reason::RequestEntityTooLarge => tonic::Code::ResourceExhausted,
            Reason::Unauthorized => tonic::Code::Unauthenticated,
            Reason::Forbidden => tonic::Code::PermissionDenied,
            Reason::MethodNotAllowed => tonic::Code::Unimplemented,
            Reason::ServiceUnavailable => tonic::Code::Unavailable,
            Reason::Timeout => tonic::Code::DeadlineExceeded,
            Reason::TooManyRequests => tonic::Code::ResourceExhausted,
            Reason::InternalError => tonic::Code::Internal,
        }
    }
}

/// What an error is about: Kubernetes' `StatusDetails`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    /// The object's name.
    pub name: String,
    /// The API group ("" for core).
    pub group: String,
    /// The kind or resource.
    pub kind: String,
}

/// A failed API call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// Why.
    pub reason: Reason,
    /// For people.
    pub message: String,
    /// What it is about, when known (boxed: errors travel in every Result).
    pub target: Option<Box<Target>>,
    /// The fields at fault (Invalid).
    pub causes: ErrorList,
}

/// `pods` or `deployments.apps`, as Kubernetes names a resource in messages.
pub fn qualified_resource(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

impl ApiError {
    fn new(reason: Reason, message: impl Into<String>) -> Self {
        ApiError {
            reason,
            message: message.into(),
            target: None,
            causes: Vec::new(),
        }
    }

    fn about(mut self, name: &str, group: &str, kind: &str) -> Self {
        self.target = Some(Box::new(Target {
            name: name.to_string(),
            group: group.to_string(),
            kind: kind.to_string(),
        }));
        self
    }

    /// `pods "web" not found`.
    pub fn not_found(resource: &str, group: &str, name: &str) -> Self {
        let qr = qualified_resource(resource, group);
        ApiError::new(Reason::NotFound, format!("{qr} \"{name}\" not found"))
            .about(name, group, resource)
    }

    /// `pods "web" already exists`.
    pub fn already_exists(resource: &str, group: &str, name: &str) -> Self {
        let qr = qualified_resource(resource, group);
        ApiError::new(
            Reason::AlreadyExists,
            format!("{qr} \"{name}\" already exists"),
        )
        .about(name, group, resource)
    }

    /// `Operation cannot be fulfilled on pods "web": <why>`.
    pub fn conflict(resource: &str, group: &str, name: &str, why: &str) -> Self {
        let qr = qualified_resource(resource, group);
        ApiError::new(
            Reason::Conflict,
            format!("Operation cannot be fulfilled on {qr} \"{name}\": {why}"),
        )
        .about(name, group, resource)
    }

    /// The conflict a stale resourceVersion causes, in Kubernetes' words.
    pub fn stale(resource: &str, group: &str, name: &str) -> Self {
        ApiError::conflict(
            resource,
            group,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// `Pod "web" is invalid: [a: Required value, b: Invalid value: ...]`.
    pub fn invalid(kind: &str, group: &str, name: &str, errors: ErrorList) -> Self {
        let list = match errors.as_slice() {
            [one] => one.to_string(),
            many => format!(
                "[{}]",
                many.iter()
                    .map(FieldError::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mut e = ApiError::new(
            Reason::Invalid,
            format!("{kind} \"{name}\" is invalid: {list}"),
        )
        .about(name, group, kind);
        e.causes = errors;
        e
    }

    /// A resource the server does not serve.
    pub fn not_found_resource(api_version: &str, resource: &str) -> Self {
        ApiError::new(
            Reason::NotFound,
            format!(
                "the server could not find the requested resource ({resource} in {api_version:?})"
            ),
        )
    }

    /// A malformed request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(Reason::BadRequest, message)
    }

    /// A resourceVersion below the compacted revision.
    pub fn gone(message: impl Into<String>) -> Self {
        ApiError::new(Reason::Expired, message)
    }

    /// A request over the size limit.
    pub fn too_large(limit: usize) -> Self {
        ApiError::new(
            Reason::RequestEntityTooLarge,
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// No or a wrong token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(Reason::Unauthorized, message)
    }

    /// Not allowed on this object.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(Reason::Forbidden, message)
    }

    /// Not supported on this resource.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        ApiError::new(Reason::MethodNotAllowed, message)
    }

    /// The store is unavailable (or a watcher was cut off).
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(Reason::ServiceUnavailable, message)
    }

    /// The store did not answer in time.
    pub fn timeout(message: impl Into<String>) -> Self {
        ApiError::new(Reason::Timeout, message)
    }

    /// Refused for now, to be retried later.
    pub fn too_many_requests(message: impl Into<String>) -> Self {
        ApiError::new(Reason::TooManyRequests, message)
    }

    /// A server-side failure.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(Reason::InternalError, message)
    }

    /// The Kubernetes `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason.as_str(),
            "code": self.reason.http_code(),
        });
        if self.target.is_some() || !self.causes.is_empty() {
            let mut details = serde_json::Map::new();
            if let Some(t) = &self.target {
                details.insert("name".into(), json!(t.name));
                if !t.group.is_empty() {
                    details.insert("group".into(), json!(t.group));
                }
                details.insert("kind".into(), json!(t.kind));
            }
            if !self.causes.is_empty() {
                let causes: Vec<Value> = self
                    .causes
                    .iter()
                    .map(|c| {
                        json!({
                            "reason": c.kind.cause_reason(),
                            "message": cause_message(c),
                            "field": c.path.as_str(),
                        })
                    })
                    .collect();
                details.insert("causes".into(), Value::Array(causes));
            }
            status["details"] = Value::Object(details);
        }
        status
    }

    /// The gRPC status: the code, the message, the `Status` JSON as details and the reason
    /// as the `flotilla-reason` metadata entry.
    pub fn to_grpc(&self) -> tonic::Status {
        let details = serde_json::to_vec(&self.to_status()).unwrap_or_default();
        let mut status = tonic::Status::with_details(
            self.reason.grpc_code(),
            self.message.clone(),
            details.into(),
        );
        if let Ok(v) = self.reason.as_str().parse() {
            status.metadata_mut().insert("flotilla-reason", v);
        }
        status
    }
}

/// A cause's message: the field error without its path (the path is in `field`).
fn cause_message(e: &FieldError) -> String {
    let full = e.to_string();
    full.strip_prefix(&format!("{}: ", e.path))
        .map(str::to_string)
        .unwrap_or(full)
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        e.to_grpc()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::FieldPath;

    #[test]
    fn messages_read_as_kubernetes_writes_them() {
        assert_eq!(
            ApiError::not_found("deployments", "apps", "web").message,
            "deployments.apps \"web\" not found"
        );
        assert_eq!(
            ApiError::stale("pods", "", "web").message,
            "Operation cannot be fulfilled on pods \"web\": the object has been modified; please apply your changes to the latest version and try again"
        );
        let one = vec![FieldError::required(
            FieldPath::new("spec").child("containers"),
            "",
        )];
        assert_eq!(
            ApiError::invalid("Pod", "", "web", one).message,
            "Pod \"web\" is invalid: spec.containers: Required value"
        );
    }

    #[test]
    fn invalid_status_lists_one_cause_per_field() {
        let errs = vec![
            FieldError::required(FieldPath::new("spec").child("containers"), ""),
            FieldError::invalid(
                FieldPath::new("spec").child("replicas"),
                -1,
                "must be greater than or equal to 0",
            ),
        ];
        let s = ApiError::invalid("Deployment", "apps", "web", errs).to_status();
        assert_eq!(s["code"], 422);
        assert_eq!(s["reason"], "Invalid");
        assert_eq!(s["details"]["causes"][1]["field"], "spec.replicas");
        assert_eq!(
            s["details"]["causes"][1]["message"],
            "Invalid value: -1: must be greater than or equal to 0"
        );
        assert_eq!(s["details"]["causes"][0]["reason"], "FieldValueRequired");
    }

    #[test]
    fn grpc_status_carries_code_reason_and_details() {
        let st = ApiError::stale("pods", "", "a").to_grpc();
        assert_eq!(st.code(), tonic::Code::Aborted);
        assert_eq!(
            st.metadata()
                .get("flotilla-reason")
                .and_then(|v| v.to_str().ok()),
            Some("Conflict")
        );
        let v: Value = serde_json::from_slice(st.details()).expect("details are JSON");
        assert_eq!(v["reason"], "Conflict");
    }
}
