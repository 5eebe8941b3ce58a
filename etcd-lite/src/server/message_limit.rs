//! Requests over the gRPC message limit get etcd's answer. grpc-go (and so etcd) refuses
//! them with ResourceExhausted "grpc: received message larger than max (N vs. M)"; tonic
//! refuses them before any service runs, with OutOfRange and a text of its own. Clients
//! branch on the code, so responses carrying tonic's refusal are rewritten to grpc-go's.

use axum::http::{HeaderValue, Response};

const TONIC_PREFIX: &str = "Error, decoded message length too large: found ";
const OUT_OF_RANGE: &[u8] = b"11";
const RESOURCE_EXHAUSTED: &str = "8";

/// Adds the rewrite to a router.
pub fn layer(router: axum::Router) -> axum::Router {
    router.layer(axum::middleware::map_response(rewrite))
}

async fn rewrite<B>(mut res: Response<B>) -> Response<B> {
    let headers = res.headers();
    if headers.get("grpc-status").map(|v| v.as_bytes()) != Some(OUT_OF_RANGE) {
        return res;
    }
    let Some((found, limit)) = headers
        .get("grpc-message")
        .map(|v| percent_decode(v.as_bytes()))
        .and_then(|m| sizes(&m))
    else {
        return res;
    };
    let message = format!("grpc: received message larger than max ({found} vs. {limit})");
    let headers = res.headers_mut();
    headers.insert("grpc-status", HeaderValue::from_static(RESOURCE_EXHAUSTED));
    if let Ok(v) = HeaderValue::from_str(&message.replace(' ', "%20")) {
        headers.insert("grpc-message", v);
    }
    res
}

/// The sizes in tonic's message: "… found N bytes, the limit is: M bytes".
fn sizes(message: &str) -> Option<(u64, u64)> {
    let rest = message.strip_prefix(TONIC_PREFIX)?;
    let (found, rest) = rest.split_once(" bytes, the limit is: ")?;
    let limit = rest.strip_suffix(" bytes")?;
    Some((found.parse().ok()?, limit.parse().ok()?))
}

/// grpc-message is percent-encoded.
fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = raw
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (raw[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tonics_refusal_becomes_grpc_gos() {
        let res = Response::builder()
            .header("grpc-status", "11")
            .header(
                "grpc-message",
                "Error,%20decoded%20message%20length%20too%20large:%20found%202098176%20bytes,%20the%20limit%20is:%202097152%20bytes",
            )
            .body(())
            .expect("response");
        let res = rewrite(res).await;
        assert_eq!(res.headers()["grpc-status"], "8");
        assert_eq!(
            percent_decode(res.headers()["grpc-message"].as_bytes()),
            "grpc: received message larger than max (2098176 vs. 2097152)"
        );
    }

    #[tokio::test]
    async fn other_out_of_range_answers_are_left_alone() {
        let res = Response::builder()
            .header("grpc-status", "11")
            .header(
                "grpc-message",
                "etcdserver:%20mvcc:%20required%20revision%20is%20a%20future%20revision",
            )
            .body(())
            .expect("response");
        assert_eq!(rewrite(res).await.headers()["grpc-status"], "11");
    }
}
