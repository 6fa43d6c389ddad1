//! The web console: a dependency-free HTML/CSS/JavaScript page served at `/ui/`, its assets
//! compiled into the binary, and the `/` redirect that sends browsers there.
//!
//! The console is a client of the HTTP API like any other: it holds no data and no secret, so
//! its routes are served outside the authentication middleware (the page asks for a token and
//! sends it as a bearer header on every API call it makes). They are not part of the API's
//! route table nor of the OpenAPI document, which describe the HTTP contract only.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::app::App;
use crate::error::Error;

/// One asset compiled into the binary: its name under `/ui/`, content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// Every file of the console. `index.html` is also served for `/ui/` itself.
const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_str!("assets/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("assets/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("assets/app.css"),
    },
];

/// Only the page's own files: no inline script, no external request of any kind.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's routes (`/`, `/ui`, `/ui/`, `/ui/{file}`), to merge into the API router
/// outside its authentication layer.
///
/// They are merged after the API router's layers and fallbacks, so they bring their own: any
/// method but GET/HEAD on `/` is the JSON 404 it always was, on `/ui...` the JSON 405.
pub(crate) fn router() -> Router<App> {
    Router::new()
        .route("/", get(root).fallback(root_not_found))
        .route(
            "/ui",
            get(|| async { Redirect::permanent("/ui/") }).fallback(get_only),
        )
        .route(
            "/ui/",
            get(|| async { serve("index.html") }).fallback(get_only),
        )
        .route(
            "/ui/{file}",
            get(|axum::extract::Path(file): axum::extract::Path<String>| async move {
                serve(&file)
            })
            .fallback(get_only),
        )
}

/// `/` for API clients: the JSON 404 of a path without a resource.
async fn root_not_found() -> Response {
    Error::NotFound("no resource at /".into()).into_response()
}

/// Another method than GET/HEAD on the console's files: the JSON 405 with `Allow`.
async fn get_only(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let mut response =
        Error::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
            .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET,HEAD"));
    response
}

/// `GET /`: a redirect to `/ui/` when the client prefers HTML (a browser), else the API's
/// JSON 404 as for any path without a resource.
async fn root(headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if prefers_html(accept) {
        Redirect::to("/ui/").into_response()
    } else {
        root_not_found().await
    }
}

/// Whether an `Accept` header ranks `text/html` strictly above `application/json` (so `*/*`
/// alone, or no header, is not a preference for HTML).
fn prefers_html(accept: &str) -> bool {
    let html = quality(accept, "text", "html");
    html > 0.0 && html > quality(accept, "application", "json")
}

/// The `q` an `Accept` header gives `kind/sub`: the most specific matching range wins
/// (`kind/sub` over `kind/*` over `*/*`); 0 when none matches.
fn quality(accept: &str, kind: &str, sub: &str) -> f32 {
    let mut best: Option<(u8, f32)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let Some((k, s)) = media.split_once('/') else {
            continue;
        };
        let specificity = match (k == kind, s == sub, k == "*", s == "*") {
            (true, true, _, _) => 3,
            (true, false, _, true) => 2,
            (false, false, true, true) => 1,
            _ => continue,
        };
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q=").map(str::to_owned))
            .find_map(|v| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if best.is_none_or(|(spec, _)| specificity > spec) {
            best = Some((specificity, q));
        }
    }
    best.map_or(0.0, |(_, q)| q)
}

/// One asset with its content type, or the JSON 404.
fn serve(name: &str) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => (
            StatusCode::OK,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(asset.content_type),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                (
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(CSP),
                ),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
                (
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("no-referrer"),
                ),
            ],
            asset.body,
        )
            .into_response(),
        None => Error::NotFound(format!("no resource at /ui/{name}")).into_response(),
    }
}

/// Total bytes of the console's assets (what the console adds to the binary).
#[cfg(test)]
fn assets_size() -> usize {
    ASSETS.iter().map(|a| a.body.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_prefer_html_api_clients_do_not() {
        let firefox = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        let chromium = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,\
                        image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7";
        assert!(prefers_html(firefox));
        assert!(prefers_html(chromium));
        assert!(!prefers_html(""));
        assert!(!prefers_html("*/*"));
        assert!(!prefers_html("application/json"));
        assert!(!prefers_html("application/json, text/html;q=0.5"));
        assert!(!prefers_html("text/html;q=0"));
        assert!(prefers_html("text/*, application/json;q=0.1"));
    }

    #[test]
    fn every_asset_is_served_with_its_type_and_unknown_files_are_json_404() {
        for asset in ASSETS {
            let response = serve(asset.name);
            assert_eq!(response.status(), StatusCode::OK, "{}", asset.name);
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                asset.content_type,
                "{}",
                asset.name
            );
            assert!(!asset.body.is_empty());
        }
        let missing = serve("nope.js");
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert!(assets_size() > 0);
    }

    /// The page makes no request to another origin: no `http(s)://` or protocol-relative URL
    /// in any asset (the CSP forbids them too).
    #[test]
    fn assets_reference_no_external_origin() {
        for asset in ASSETS {
            // The SVG namespace is a name, never fetched.
            let body = asset.body.replace("http://www.w3.org/2000/svg", "");
            for needle in ["http://", "https://", "src=\"//", "href=\"//", "url(//"] {
                assert!(!body.contains(needle), "{} contains {needle}", asset.name);
            }
        }
    }
}
