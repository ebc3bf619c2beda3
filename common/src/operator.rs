//! Operator endpoints (SPEC §8): with an operator token set (`NEARFIELD_OPERATOR_TOKEN` or
//! `[operator] token_file`), the query and admin endpoints of the aggregator, the emitter
//! and the live page answer only requests with `Authorization: Bearer <token>`; `/healthz`,
//! `/readyz` and `/metrics` stay open for probes and Prometheus. Without a token a stage
//! serves loopback only: a non-loopback listen address is refused at start.
//!
//! A stage may also admit [`SupplierTokens`] (the emitter's `/v1/plans`): a request with a
//! supplier's own token is let through as [`Caller::Supplier`], and the handler shows it
//! only that supplier's data.

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

/// Who a guarded request comes from (a request extension; absent on an unguarded
/// loopback-only server, where the caller is the operator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Operator,
    /// A supplier, by its id: sees only its own data.
    Supplier(String),
}

/// Suppliers' own tokens: a file of `<supplier_id> <token>` lines (`#` starts a comment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SupplierTokens(Vec<(String, OperatorToken)>);

impl SupplierTokens {
    /// Parses the file's text; the error names the line and the rule.
    pub fn parse(text: &str) -> Result<SupplierTokens, String> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(id), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("line {}: must be `<supplier_id> <token>`", i + 1));
            };
            if crate::ids::check(id, 48).is_err() {
                return Err(format!(
                    "line {}: supplier_id must be 1..=48 bytes of [A-Za-z0-9._:-]",
                    i + 1
                ));
            }
            let token = OperatorToken::new(token).map_err(|e| format!("line {}: {e}", i + 1))?;
            if out.iter().any(|(_, t): &(String, OperatorToken)| *t == token) {
                return Err(format!("line {}: the token is already another supplier's", i + 1));
            }
            out.push((id.to_string(), token));
        }
        Ok(SupplierTokens(out))
    }

    /// No supplier has a token.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The supplier whose token `value` carries (every entry compared, in constant time).
    fn supplier(&self, value: Option<&HeaderValue>) -> Option<String> {
        let mut found = None;
        for (id, t) in &self.0 {
            if t.admits(value) {
                found = Some(id.clone());
            }
        }
        found
    }
}

/// `router` with every route behind the token (unchanged without one).
pub fn guard(router: Router, token: Option<OperatorToken>) -> Router {
    guard_with(router, token, SupplierTokens::default())
}

/// `router` behind the operator token, also admitting `suppliers` (each as
/// [`Caller::Supplier`]). Unchanged when there is neither.
pub fn guard_with(
    router: Router,
    token: Option<OperatorToken>,
    suppliers: SupplierTokens,
) -> Router {
    if token.is_none() && suppliers.is_empty() {
        return router;
    }
    router.layer(axum::middleware::from_fn_with_state(Arc::new((token, suppliers)), admit))
}

type Admits = Arc<(Option<OperatorToken>, SupplierTokens)>;

async fn admit(State(admits): State<Admits>, mut request: Request, next: Next) -> Response {
    let value = request.headers().get(header::AUTHORIZATION);
    let caller = if admits.0.as_ref().is_some_and(|t| t.admits(value)) {
        Some(Caller::Operator)
    } else {
        admits.1.supplier(value).map(Caller::Supplier)
    };
    if let Some(c) = caller {
        request.extensions_mut().insert(c);
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

    #[tokio::test]
    async fn a_supplier_token_opens_the_route_as_that_supplier() {
        let token = OperatorToken::new("s3cret-operator-token").expect("token");
        let suppliers = SupplierTokens::parse(
            "# id token\nbright-dairy token-of-bright-dairy\nmaster-kong token-of-master-kong # x\n",
        )
        .expect("tokens");
        let who = |c: Option<axum::Extension<Caller>>| async move {
            match c {
                Some(axum::Extension(Caller::Supplier(s))) => s,
                Some(axum::Extension(Caller::Operator)) => "operator".into(),
                None => "nobody".into(),
            }
        };
        let app = guard_with(Router::new().route("/v1/plans", get(who)), Some(token), suppliers);
        let body = |auth: &'static str| {
            let app = app.clone();
            async move {
                let req = Request::builder()
                    .uri("/v1/plans")
                    .header(header::AUTHORIZATION, auth)
                    .body(Body::empty())
                    .expect("request");
                let r = app.oneshot(req).await.expect("response");
                let bytes = axum::body::to_bytes(r.into_body(), 1 << 10).await.expect("body");
                String::from_utf8_lossy(&bytes).into_owned()
            }
        };
        assert_eq!(body("Bearer token-of-master-kong").await, "master-kong");
        assert_eq!(body("Bearer s3cret-operator-token").await, "operator");
        assert_eq!(
            status(&app, Some("Bearer token-of-nobody-at-all")).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(status(&app, None).await, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn supplier_token_files_name_the_bad_line() {
        for (text, want) in [
            ("a b c\n", "line 1: must be"),
            ("ok-supplier short\n", "line 1: operator token: must be at least"),
            ("bad/id 0123456789abcdef\n", "line 1: supplier_id"),
            ("a 0123456789abcdef\nb 0123456789abcdef\n", "line 2: the token is already"),
        ] {
            let e = SupplierTokens::parse(text).expect_err(text);
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
        assert!(SupplierTokens::parse("\n# nothing\n").expect("empty").is_empty());
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
