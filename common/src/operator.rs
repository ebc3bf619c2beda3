//! Operator endpoints (SPEC §8): with an operator token set (`NEARFIELD_OPERATOR_TOKEN` or
//! `[operator] token_file`), the query and admin endpoints of the aggregator, the emitter
//! and the live page answer only requests with `Authorization: Bearer <token>`; `/healthz`,
//! `/readyz` and `/metrics` stay open for probes and Prometheus. Without a token a stage
//! serves loopback only: a non-loopback listen address is refused at start.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The shortest token accepted (bytes).
pub const MIN_TOKEN_BYTES: usize = 16;

/// An operator token. Its `Debug` form never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct OperatorToken(Arc<str>);

impl std::fmt::Debug for OperatorToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorToken(<redacted>)")
    }
}

impl OperatorToken {
    /// A token from its text (surrounding whitespace, e.g. a file's newline, is dropped).
    /// The error names the rule.
    pub fn new(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.len() < MIN_TOKEN_BYTES {
            return Err(format!("operator token: must be at least {MIN_TOKEN_BYTES} bytes"));
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("operator token: printable ASCII without spaces only".into());
        }
        Ok(OperatorToken(t.into()))
    }

    /// The token as sent in a header (for clients of other stages, e.g. the live page).
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether an `Authorization` header value carries this token (constant time).
    fn admits(&self, value: Option<&HeaderValue>) -> bool {
        use subtle::ConstantTimeEq;
        let Some(given) = value.and_then(|v| v.to_str().ok()) else { return false };
        let Some(given) = given.strip_prefix("Bearer ") else { return false };
        given.as_bytes().ct_eq(self.0.as_bytes()).into()
    }
}

/// Checks that a stage may listen on `listen`: a non-loopback address needs a token.
/// The error names the setting.
pub fn check_listen(
    setting: &str,
    listen: SocketAddr,
    token: Option<&OperatorToken>,
) -> Result<(), String> {
    if token.is_none() && !listen.ip().is_loopback() {
        return Err(format!(
            "{setting} {listen}: a non-loopback address needs an operator token \
             (NEARFIELD_OPERATOR_TOKEN or [operator] token_file); without one the query \
             endpoints serve loopback only"
        ));
    }
    Ok(())
}

/// `router` with every route behind the token (unchanged without one).
pub fn guard(router: Router, token: Option<OperatorToken>) -> Router {
    match token {
        None => router,
        Some(t) => router.layer(axum::middleware::from_fn_with_state(t, admit)),
    }
}

async fn admit(State(token): State<OperatorToken>, request: Request, next: Next) -> Response {
    if token.admits(request.headers().get(header::AUTHORIZATION)) {
        return next.run(request).await;
    }
    let body = serde_json::json!({"error": {
        "field": "Authorization",
        "rule": "operator.token",
        "message": "this endpoint needs Authorization: Bearer <operator token>",
    }});
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], axum::Json(body))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    async fn status(app: &Router, auth: Option<&str>) -> StatusCode {
        let mut req = Request::builder().uri("/v1/plans");
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let req = req.body(Body::empty()).expect("request");
        app.clone().oneshot(req).await.expect("response").status()
    }

    #[tokio::test]
    async fn only_the_token_opens_a_guarded_route() {
        let token = OperatorToken::new("s3cret-operator-token\n").expect("token");
        let app = guard(Router::new().route("/v1/plans", get(|| async { "plans" })), Some(token));
        assert_eq!(status(&app, None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(
            status(&app, Some("Bearer wrong-token-xxxxxxx")).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(status(&app, Some("s3cret-operator-token")).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(&app, Some("Bearer s3cret-operator-token")).await, StatusCode::OK);
        let open = guard(Router::new().route("/v1/plans", get(|| async { "plans" })), None);
        assert_eq!(status(&open, None).await, StatusCode::OK);
    }

    #[test]
    fn tokens_are_long_printable_and_never_shown() {
        assert!(OperatorToken::new("short").is_err());
        assert!(OperatorToken::new("has a space in it, sixteen+").is_err());
        let t = OperatorToken::new("0123456789abcdef").expect("16 bytes");
        assert_eq!(format!("{t:?}"), "OperatorToken(<redacted>)");
        assert_eq!(t.bearer(), "Bearer 0123456789abcdef");
    }

    #[test]
    fn without_a_token_only_loopback_is_served() {
        let any: SocketAddr = "0.0.0.0:8081".parse().expect("addr");
        let lo: SocketAddr = "127.0.0.1:8081".parse().expect("addr");
        let e = check_listen("aggregate.listen", any, None).expect_err("refused");
        assert!(
            e.starts_with("aggregate.listen 0.0.0.0:8081: a non-loopback address needs"),
            "{e}"
        );
        assert!(check_listen("aggregate.listen", lo, None).is_ok());
        let t = OperatorToken::new("0123456789abcdef").expect("token");
        assert!(check_listen("aggregate.listen", any, Some(&t)).is_ok());
    }
}
