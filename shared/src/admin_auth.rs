//! Bearer-token checks of the admin endpoints (node and coordinator share one `ADMIN_TOKEN`).

use actix_web::{HttpRequest, HttpResponse};
use serde_json::json;

/// Whether an `Authorization` header value carries `Bearer {token}`; compared in constant time
/// so response timing does not leak the token.
pub fn bearer_matches(header: Option<&str>, token: &str) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `Some(401)` unless `http` carries the configured admin token; `None` lets the call through.
pub fn deny_unless_admin(http: &HttpRequest, token: Option<&str>) -> Option<HttpResponse> {
    let header = http
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    match token {
        Some(token) if bearer_matches(header, token) => None,
        _ => Some(
            HttpResponse::Unauthorized()
                .insert_header(("www-authenticate", "Bearer"))
                .json(
                    json!({"error": "missing or wrong admin token", "error_type": "unauthorized"}),
                ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::bearer_matches;

    #[test]
    fn bearer_tokens_must_match_exactly() {
        assert!(bearer_matches(Some("Bearer s3cret"), "s3cret"));
        assert!(!bearer_matches(Some("Bearer s3cre"), "s3cret"));
        assert!(!bearer_matches(Some("s3cret"), "s3cret"));
        assert!(!bearer_matches(None, "s3cret"));
    }
}
