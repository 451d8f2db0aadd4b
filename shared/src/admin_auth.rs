//! Bearer-token checks of the admin endpoints (node and coordinator share one `ADMIN_TOKEN`).

use actix_web::http::header::{HeaderMap, AUTHORIZATION};
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

/// Whether request `headers` carry `Authorization: Bearer {token}`; never with no token set.
pub fn is_admin(headers: &HeaderMap, token: Option<&str>) -> bool {
    let header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    token.is_some_and(|token| bearer_matches(header, token))
}

/// `Some(401)` unless `http` carries the configured admin token; `None` lets the call through.
pub fn deny_unless_admin(http: &HttpRequest, token: Option<&str>) -> Option<HttpResponse> {
    if is_admin(http.headers(), token) {
        return None;
    }
    Some(
        HttpResponse::Unauthorized()
            .insert_header(("www-authenticate", "Bearer"))
            .json(json!({"error": "missing or wrong admin token", "error_type": "unauthorized"})),
    )
}

#[cfg(test)]
mod tests {
    use super::{bearer_matches, is_admin};
    use actix_web::http::header::{HeaderMap, HeaderValue, AUTHORIZATION};

    #[test]
    fn bearer_tokens_must_match_exactly() {
        assert!(bearer_matches(Some("Bearer s3cret"), "s3cret"));
        assert!(!bearer_matches(Some("Bearer s3cre"), "s3cret"));
        assert!(!bearer_matches(Some("s3cret"), "s3cret"));
        assert!(!bearer_matches(None, "s3cret"));
    }

    #[test]
    fn no_token_configured_admits_nobody() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert!(!is_admin(&headers, None));
        assert!(!is_admin(&HeaderMap::new(), Some("t")));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        assert!(is_admin(&headers, Some("t")));
    }
}
