//! End-to-end: `strata verify` and `strata repair` on the real binary. A data directory written
//! by `strata serve` (stopped) gets a flipped byte in a sealed segment and one in the open
//! segment; `verify` lists both ranges (file, offset, length, positions) and exits non-zero;
//! `repair` is refused while a server holds the directory and on a directory that is not a
//! store; then it quarantines the damage, and the restarted server serves every intact event
//! with its position and revision, answers `/health` ok and accepts appends.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};
use strata_suite::cli::{fails, ok, run};
use strata_suite::{strata_binary, Client, TestServer};

/// `strata ARGS` (offline subcommands), waited for.
fn strata(args: &[&str]) -> Output {
    let mut cmd = Command::new(strata_binary());
    cmd.args(args);
    run(cmd, None)
}

/// Every event of the log as (position, stream, revision, id, data), paging through `/all`.
fn all_events(c: &Client) -> Vec<(u64, String, u64, String, Value)> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let page = c.page(&format!("/all?limit=100&from={from}"));
        for e in page["events"].as_array().expect("events") {
            out.push((
                e["position"].as_u64().expect("position"),
                e["stream"].as_str().expect("stream").to_owned(),
                e["revision"].as_u64().expect("revision"),
                e["id"].as_str().expect("id").to_owned(),
                e["data"].clone(),
            ));
        }
        if page["end"] == json!(true) {
            return out;
        }
        from = page["next"].as_u64().expect("next");
    }
}

/// The frames of a segment file as (offset, length, position) (layout: docs/on-disk-format.md).
fn frames(path: &Path) -> Vec<(u64, u64, u64)> {
    let bytes = std::fs::read(path).expect("read segment");
    let mut out = Vec::new();
    let mut at = 32;
    while at + 64 <= bytes.len() {
        let body = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        if body < 56 || at + 8 + body > bytes.len() {
            break;
        }
        let position = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().expect("8 bytes"));
        out.push((at as u64, (8 + body) as u64, position));
        at += 8 + body;
    }
    out
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

/// Flips a byte in the body of the middle frame of `seg`: returns its (offset, length,
/// position).
fn damage_middle_frame(seg: &Path) -> (u64, u64, u64) {
    let fr = frames(seg);
    assert!(fr.len() >= 3, "{} frames in {}", fr.len(), seg.display());
    let f = fr[fr.len() / 2];
    let mut bytes = std::fs::read(seg).expect("read");
    bytes[(f.0 + 8 + 20) as usize] ^= 0x5a; // the timestamp: the body fails its CRC
    std::fs::write(seg, bytes).expect("write");
    f
}

#[test]
fn verify_lists_the_damage_repair_quarantines_it_and_the_server_serves_every_intact_event() {
    let mut server = TestServer::start_with(&["--segment-size", "4096"]);
    let c = server.client();
    for b in 0..40 {
        let events: Vec<Value> = (0..2)
            .map(|i| json!({"type": "R", "data": {"b": b, "i": i, "pad": "r".repeat(150)}}))
            .collect();
        c.append(&format!("repair-{}", b % 3), &Value::Array(events));
    }
    let before = all_events(&c);
    server.stop(libc::SIGTERM);
    let dir = server.dir.path().to_owned();
    let dir_arg = dir.to_str().expect("utf-8 path").to_owned();
    let segs = segments(&dir);
    assert!(segs.len() >= 3, "{segs:?}");
    let sealed = damage_middle_frame(&segs[0]);
    let open_seg = segs.last().expect("segments").clone();
    let open = damage_middle_frame(&open_seg);

    // verify: both ranges, non-zero exit.
    let out = strata(&["verify", "--data-dir", &dir_arg]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    for (seg, (offset, len, position)) in [(&segs[0], sealed), (&open_seg, open)] {
        let line = format!(
            "damage: {} offset {offset}, {len} bytes, positions {position}..{} (1 lost)",
            seg.display(),
            position + 1
        );
        assert!(stdout.contains(&line), "missing {line:?} in:\n{stdout}");
    }

    // Refused while a server runs on the directory (it starts read-only on this damage).
    server.restart();
    let err = fails(&strata(&["repair", "--data-dir", &dir_arg]));
    assert!(err.contains("in use"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!dir.join("quarantine").exists());
    server.stop(libc::SIGTERM);

    // Refused on a directory that is not a store, which stays empty.
    let other = tempfile::tempdir().expect("tempdir");
    let other_arg = other.path().to_str().expect("utf-8 path");
    let err = fails(&strata(&["repair", "--data-dir", other_arg]));
    assert!(err.contains("not a Strata data directory"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(std::fs::read_dir(other.path()).expect("read").count(), 0);

    // The repair.
    let report = ok(&strata(&["repair", "--data-dir", &dir_arg]));
    assert!(report.contains("lost: 2 position(s)"), "{report}");
    let kept = before.len() - 2;
    assert!(
        report.contains(&format!("kept: {kept} event(s)")),
        "{report}"
    );
    let quarantine: Vec<PathBuf> = std::fs::read_dir(dir.join("quarantine"))
        .expect("quarantine")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(quarantine.len(), 1, "{quarantine:?}");
    let kept_report = std::fs::read_to_string(quarantine[0].join("report.txt")).expect("report");
    assert_eq!(kept_report, report);
    ok(&strata(&["verify", "--data-dir", &dir_arg]));
    let again = ok(&strata(&["repair", "--data-dir", &dir_arg]));
    assert!(again.contains("no damage found"), "{again}");

    // Every intact event is served as before; health ok; appends go on.
    server.restart();
    let c = server.client();
    let health = c.get("/health");
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json()["status"], "ok");
    let want: Vec<_> = before
        .iter()
        .filter(|e| e.0 != sealed.2 && e.0 != open.2)
        .cloned()
        .collect();
    assert_eq!(all_events(&c), want);
    let r = c.append("repair-new", &json!([{"type": "After", "data": {}}]));
    assert_eq!(r["first_position"], json!(before.len()));
    server.stop(libc::SIGTERM);
}
