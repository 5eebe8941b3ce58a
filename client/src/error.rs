//! What a call to the API can fail with, as a typed enum: the server's Kubernetes status
//! (its reason, message and, for Invalid, the fields at fault), the transport, or TLS
//! settings in the kubeconfig that cannot be used.

use std::path::PathBuf;

use serde_json::Value;

/// A kubeconfig's TLS settings that cannot be used; each names the field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsConfigError {
    /// The file a field names cannot be read.
    #[error("{field} {path}: {reason}")]
    Unreadable {
        /// The kubeconfig field.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An inline `-data` field that is not base64.
    #[error("{field}: not valid base64: {reason}")]
    NotBase64 {
        /// The kubeconfig field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// No PEM certificate or key where one is expected, or malformed PEM.
    #[error("{field}: {reason}")]
    BadPem {
        /// The kubeconfig field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A client certificate without its key, or a key without its certificate.
    #[error("{present} is set but {missing} is not: a client certificate needs its key")]
    Unpaired {
        /// The field that is set.
        present: &'static str,
        /// The field that is missing.
        missing: &'static str,
    },
    /// `insecure-skip-tls-verify` together with a CA (kubectl refuses it too).
    #[error("insecure-skip-tls-verify cannot be combined with {field}: remove one of them")]
    InsecureWithCa {
        /// The CA field.
        field: &'static str,
    },
    /// TLS could not be set up with these values (a key that does not match its
    /// certificate, no system root certificates when no CA is given).
    #[error("{0}")]
    Setup(String),
}

/// One field the server found invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// The field path (`spec.containers[0].name`).
    pub field: String,
    /// Kubernetes' cause reason (`FieldValueRequired`).
    pub reason: String,
    /// What is wrong (`Required value`).
    pub message: String,
}

/// A failed call.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ClientError {
    /// The object (or its namespace) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The name is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// A stale resourceVersion or a failed precondition.
    #[error("{0}")]
    Conflict(String),
    /// The object failed validation; `causes` names each field.
    #[error("{message}")]
    Invalid {
        /// The server's message (every field and reason).
        message: String,
        /// The fields at fault.
        causes: Vec<Cause>,
    },
    /// The request is malformed (bad selector, wrong kind, bad JSON).
    #[error("{0}")]
    BadRequest(String),
    /// A resourceVersion or continue token too old: list again.
    #[error("{0}")]
    Expired(String),
    /// The request is over the server's size limit.
    #[error("{0}")]
    TooLarge(String),
    /// Refused for now; the same request may succeed later (an eviction a
    /// PodDisruptionBudget does not allow yet).
    #[error("{0}")]
    TooManyRequests(String),
    /// No or a wrong token.
    #[error("{0}")]
    Unauthorized(String),
    /// Not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// The server (or its store) is unavailable, or a watch fell behind: retry or resume.
    #[error("{0}")]
    Unavailable(String),
    /// The server cannot be reached at all.
    #[error("cannot reach the server at {address}: {reason}")]
    Unreachable {
        /// The server's URL.
        address: String,
        /// Why.
        reason: String,
    },
    /// The kubeconfig's TLS settings cannot be used.
    #[error("kubeconfig {origin}: {error}")]
    TlsConfig {
        /// The kubeconfig file(s).
        origin: String,
        /// Which field, and what is wrong with it.
        error: TlsConfigError,
    },
    /// The TLS handshake with the server failed (an untrusted or mismatched server
    /// certificate, a client certificate the server refused, a server without TLS).
    #[error("TLS handshake with {address} failed: {reason}")]
    Tls {
        /// The server's URL.
        address: String,
        /// What went wrong, and what to check.
        reason: String,
    },
    /// The server answered with something this client cannot decode.
    #[error("cannot decode the server's answer: {0}")]
    Decode(String),
    /// Any other failure the server reported.
    #[error("{0}")]
    Other(String),
}

impl ClientError {
    /// Is it NotFound?
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::NotFound(_))
    }

    /// Is it Conflict?
    pub fn is_conflict(&self) -> bool {
        matches!(self, ClientError::Conflict(_))
    }

    /// Is it AlreadyExists?
    pub fn is_already_exists(&self) -> bool {
        matches!(self, ClientError::AlreadyExists(_))
    }

    /// Is it TooManyRequests (retry later)?
    pub fn is_too_many_requests(&self) -> bool {
        matches!(self, ClientError::TooManyRequests(_))
    }

    /// Is it Expired (a watch or list must start over)?
    pub fn is_expired(&self) -> bool {
        matches!(self, ClientError::Expired(_))
    }

    /// The error for a gRPC status from the server at `address`.
    pub fn from_status(status: &tonic::Status, address: &str) -> Self {
        let details: Value = serde_json::from_slice(status.details()).unwrap_or(Value::Null);
        let reason = details["reason"].as_str().unwrap_or_default();
        // tonic says only "transport error" for a broken connection; the cause is deeper.
        let message = if status.message() == "transport error" {
            let mut parts: Vec<String> = Vec::new();
            for c in causes(status) {
                if !parts.contains(&c) {
                    parts.push(c);
                }
            }
            parts.join(": ")
        } else {
            status.message().to_string()
        };
        // A connection that failed in its TLS handshake, not a status from the server: the
        // cause is the status's message or, for a failure tonic calls "transport error",
        // deeper in its source chain.
        if details.is_null()
            && matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
            )
            && let Some(reason) = causes(status)
                .iter()
                .rev()
                .find_map(|m| crate::tls::explain_handshake_failure(m))
        {
            return ClientError::Tls {
                address: address.to_string(),
                reason,
            };
        }
        match (status.code(), reason) {
            (_, "NotFound") | (tonic::Code::NotFound, _) => ClientError::NotFound(message),
            (_, "AlreadyExists") | (tonic::Code::AlreadyExists, _) => {
                ClientError::AlreadyExists(message)
            }
            (_, "Conflict") | (tonic::Code::Aborted, _) => ClientError::Conflict(message),
            (_, "Invalid") => ClientError::Invalid {
                message,
                causes: details["details"]["causes"]
                    .as_array()
                    .map(|cs| cs.iter().map(cause).collect())
                    .unwrap_or_default(),
            },
            (_, "Expired" | "Gone") | (tonic::Code::OutOfRange, _) => ClientError::Expired(message),
            (tonic::Code::InvalidArgument, _) => ClientError::BadRequest(message),
            (_, "TooManyRequests") => ClientError::TooManyRequests(message),
            (tonic::Code::ResourceExhausted, _) => ClientError::TooLarge(message),
            (tonic::Code::Unauthenticated, _) => ClientError::Unauthorized(message),
            (tonic::Code::PermissionDenied, _) => ClientError::Forbidden(message),
            (tonic::Code::Unavailable, _) if details.is_null() => ClientError::Unreachable {
                address: address.to_string(),
                reason: message,
            },
            (tonic::Code::Unavailable | tonic::Code::DeadlineExceeded, _) => {
                ClientError::Unavailable(message)
            }
            _ => ClientError::Other(message),
        }
    }
}

/// The status's message and those of its sources, outermost first.
pub(crate) fn causes(status: &tonic::Status) -> Vec<String> {
    let mut out = vec![status.message().to_string()];
    let mut cur = std::error::Error::source(status);
    while let Some(e) = cur {
        out.push(e.to_string());
        cur = e.source();
    }
    out
}

fn cause(c: &Value) -> Cause {
    let text = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    Cause {
        field: text("field"),
        reason: text("reason"),
        message: text("message"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: tonic::Code, details: Value) -> tonic::Status {
        tonic::Status::with_details(
            code,
            "msg",
            serde_json::to_vec(&details).expect("json").into(),
        )
    }

    #[test]
    fn statuses_become_typed_errors() {
        let invalid = status(
            tonic::Code::InvalidArgument,
            serde_json::json!({"reason": "Invalid", "details": {"causes": [{"field": "spec.replicas", "reason": "FieldValueInvalid", "message": "Invalid value: -1"}]}}),
        );
        match ClientError::from_status(&invalid, "http://x") {
            ClientError::Invalid { causes, .. } => assert_eq!(causes[0].field, "spec.replicas"),
            other => panic!("{other:?}"),
        }
        let bad = status(
            tonic::Code::InvalidArgument,
            serde_json::json!({"reason": "BadRequest"}),
        );
        assert!(matches!(
            ClientError::from_status(&bad, "x"),
            ClientError::BadRequest(_)
        ));
        let conflict = status(
            tonic::Code::Aborted,
            serde_json::json!({"reason": "Conflict"}),
        );
        assert!(ClientError::from_status(&conflict, "x").is_conflict());
        let expired = status(
            tonic::Code::OutOfRange,
            serde_json::json!({"reason": "Expired"}),
        );
        assert!(ClientError::from_status(&expired, "x").is_expired());
        let down = tonic::Status::unavailable("connection refused");
        assert!(matches!(
            ClientError::from_status(&down, "http://127.0.0.1:1"),
            ClientError::Unreachable { .. }
        ));
    }
}
