//! Bearer tokens: 401 / 403, roles, stream prefixes, `/health` open.

use strata_server::Role;

use crate::support::TestServer;

fn secured() -> TestServer {
    TestServer::with(|c| {
        c.auth.add_admin_token("admin-token");
        c.auth
            .add_tokens_text("w-token write order- \nr-token read\nro-token read order-\n")
            .unwrap();
        c.auth.add_token("w-all", Role::Write, Vec::new());
    })
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_except_for_health() {
    let s = secured();
    assert_eq!(s.get("/health").await.status, 200);
    let r = s.get("/all").await;
    r.assert_error(401, "unauthorized");
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    for uri in [
        "/info",
        "/metrics",
        "/openapi.json",
        "/streams",
        "/streams/x",
        "/nope",
    ] {
        s.get(uri).await.assert_error(401, "unauthorized");
    }
    s.get_as("/all", "Bearer wrong")
        .await
        .assert_error(401, "unauthorized");
    s.get_as("/all", "Basic YWRtaW4=")
        .await
        .assert_error(401, "unauthorized");
    s.post("/streams/order-1", r#"{"type":"T"}"#, &[])
        .await
        .assert_error(401, "unauthorized");
    let admin = bearer("admin-token");
    assert_eq!(s.get_as("/all", &admin).await.status, 200);
    assert_eq!(s.get_as("/info", &admin).await.status, 200);
    // Unknown routes answer 404 once authenticated.
    s.get_as("/nope", &admin)
        .await
        .assert_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_prefixes() {
    let s = secured();
    let (admin, w, r, ro, w_all) = (
        bearer("admin-token"),
        bearer("w-token"),
        bearer("r-token"),
        bearer("ro-token"),
        bearer("w-all"),
    );
    let event = r#"{"type":"T"}"#;
    // write token limited to order-
    assert_eq!(
        s.post("/streams/order-1", event, &[("authorization", &w)])
            .await
            .status,
        201
    );
    s.post("/streams/user-1", event, &[("authorization", &w)])
        .await
        .assert_error(403, "forbidden");
    assert_eq!(
        s.post("/streams/user-1", event, &[("authorization", &admin)])
            .await
            .status,
        201
    );
    // read token: reads only
    assert_eq!(s.get_as("/streams/user-1", &r).await.status, 200);
    assert_eq!(s.get_as("/streams", &r).await.status, 200);
    assert_eq!(s.get_as("/metrics", &r).await.status, 200);
    s.post("/streams/order-1", event, &[("authorization", &r)])
        .await
        .assert_error(403, "forbidden");
    s.call_as("DELETE", "/streams/order-1", &r)
        .await
        .assert_error(403, "forbidden");
    s.call(
        "PUT",
        "/streams/order-1/metadata",
        &[("authorization", &r), ("content-type", "application/json")],
        "{}",
    )
    .await
    .assert_error(403, "forbidden");
    // read token limited to order-: /all and listings must be narrowed to the prefix.
    assert_eq!(s.get_as("/streams/order-1", &ro).await.status, 200);
    s.get_as("/streams/user-1", &ro)
        .await
        .assert_error(403, "forbidden");
    s.get_as("/all", &ro).await.assert_error(403, "forbidden");
    assert_eq!(s.get_as("/all?stream_prefix=order-", &ro).await.status, 200);
    s.get_as("/streams", &ro)
        .await
        .assert_error(403, "forbidden");
    assert_eq!(s.get_as("/streams?prefix=order-1", &ro).await.status, 200);
    // Hard deletes, system streams and include_system are admin-only.
    s.call_as("DELETE", "/streams/order-1?hard=true", &w_all)
        .await
        .assert_error(403, "forbidden");
    s.get_as("/all?include_system=true", &r)
        .await
        .assert_error(403, "forbidden");
    s.get_as("/streams/%24%24order-1", &r)
        .await
        .assert_error(403, "forbidden");
    assert_eq!(
        s.call_as("DELETE", "/streams/order-1", &w_all).await.status,
        204
    );
    assert_eq!(
        s.call_as("DELETE", "/streams/order-1?hard=true", &admin)
            .await
            .status,
        204
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scavenging_needs_an_admin_token() {
    let s = secured();
    for token in ["w-all", "r-token", "w-token"] {
        for method in ["POST", "GET", "DELETE"] {
            s.call_as(method, "/admin/scavenge", &bearer(token))
                .await
                .assert_error(403, "forbidden");
        }
    }
    s.call_as("GET", "/admin/scavenge", "Bearer wrong")
        .await
        .assert_error(401, "unauthorized");
    let status = s.get_as("/admin/scavenge", &bearer("admin-token")).await;
    assert_eq!(status.status, 200);
    assert_eq!(status.json()["status"], "idle");
    let stopped = s
        .call_as("DELETE", "/admin/scavenge", &bearer("admin-token"))
        .await;
    assert_eq!(stopped.status, 200);
    assert_eq!(stopped.json()["status"], "idle");
}
