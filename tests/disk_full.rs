//! End-to-end: a really full disk. The test mounts a 4 MiB tmpfs, serves a data directory on it
//! and appends until the disk is full: appends answer 507 `insufficient_storage` and write
//! nothing, `/health` answers 503 `disk_full`, reads go on; once a filler file on the same tmpfs
//! is deleted, appends succeed again and `/health` is `ok`, without a restart; after a restart
//! every acknowledged event is there, and nothing else.
//!
//! Mounting needs root (CAP_SYS_ADMIN): without it the test prints why and passes vacuously.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use strata_suite::groups::Group;
use strata_suite::{strata_binary, Client, ServerProcess, START_TIMEOUT};

/// A tmpfs mounted for the test; unmounted (lazily, so that a server still holding files cannot
/// keep it) on drop.
struct Tmpfs {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `4m`); `Err` with the reason when it cannot.
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let parent = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let dir = parent.path().join("mnt");
        std::fs::create_dir(&dir).map_err(|e| format!("mkdir: {e}"))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            dir,
            _parent: parent,
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn start(data_dir: &Path) -> ServerProcess {
    ServerProcess::start(
        strata_binary(),
        data_dir,
        &[
            "--fsync",
            "always",
            "--segment-size",
            "1048576",
            "--log-level",
            "error",
        ],
        START_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("starting strata: {e}"))
}

/// One event of about 16 KiB with a fresh id; returns the body and the id.
fn fill_event(i: usize) -> (Value, String) {
    let id = uuid::Uuid::new_v4().to_string();
    let body = json!([{"id": id, "type": "Fill", "data": {"i": i, "pad": "x".repeat(16 * 1024)}}]);
    (body, id)
}

/// The ids of `stream` in revision order (NDJSON replay), checking that revisions are dense.
fn ids_of(c: &Client, stream: &str) -> Vec<String> {
    let events = c.read_stream(stream);
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            assert_eq!(e["revision"], i as u64, "{e}");
            e["id"].as_str().expect("id").to_owned()
        })
        .collect()
}

#[test]
fn a_full_disk_answers_507_health_disk_full_and_appends_resume_once_space_is_freed() {
    let fs = match Tmpfs::mount("4m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIPPED: cannot mount a tmpfs for the full-disk test: {why}");
            return;
        }
    };
    // Room to free later, on the same file system.
    let filler = fs.dir.join("filler");
    std::fs::write(&filler, vec![1u8; 1024 * 1024]).expect("filler file");
    let data = fs.dir.join("data");
    let server = start(&data);
    let c = server.client();
    let group = Group::create(&c, "readers", &json!({"source": "fill"}));
    let mut acked: Vec<String> = Vec::new();
    let mut refused = None;
    for i in 0..1000 {
        let (body, id) = fill_event(i);
        let r = c.append_expecting("fill", None, &body);
        match r.status {
            201 => acked.push(id),
            507 => {
                refused = Some((r, id));
                break;
            }
            other => panic!("append {i}: unexpected {other}: {}", r.text()),
        }
    }
    let (r, refused_id) = refused.expect("a 4 MiB disk never filled up");
    let v = r.assert_error(507, "insufficient_storage");
    assert!(acked.len() > 10, "only {} appends fit", acked.len());
    let message = v["message"].as_str().unwrap_or_default();
    assert!(message.contains("disk full"), "{message}");
    // Still full: refused again, and nothing half-written is visible.
    let (body, refused_again) = fill_event(0);
    c.append_expecting("fill", None, &body)
        .assert_error(507, "insufficient_storage");
    let health = c.get("/health");
    let v = health.assert_error(503, "insufficient_storage");
    assert_eq!(v["status"], "disk_full", "{v}");
    // Reads go on: the stream, the log, one event.
    assert_eq!(ids_of(&c, "fill"), acked);
    assert_eq!(c.ndjson("/all").len(), acked.len());
    c.get("/streams/fill/0").assert_status(200);
    // Consumer groups go on: polls deliver, acks are taken (saved once space is free).
    let msgs = group.poll(5, 0);
    assert_eq!(msgs.len(), 5);
    assert_eq!(msgs[0].id(), acked[0]);
    group.ack_all(&msgs);
    // Space is freed: the store is healthy again by itself (no append needed: a readiness
    // probe that stopped traffic must see it), and appends succeed, without a restart.
    std::fs::remove_file(&filler).expect("remove filler");
    let health = c.get("/health");
    assert_eq!(health.status, 200, "{}", health.text());
    for i in 0..3 {
        let (body, id) = fill_event(i);
        let r = c.append_expecting("fill", None, &body);
        assert_eq!(r.status, 201, "append after freeing space: {}", r.text());
        assert_eq!(r.json()["first_revision"], acked.len() as u64);
        acked.push(id);
    }
    let health = c.get("/health");
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json()["status"], "ok");
    // After a restart, exactly the acknowledged events are there.
    let status = server
        .stop_with(libc::SIGTERM)
        .unwrap_or_else(|e| panic!("stopping strata: {e}"));
    assert!(status.success(), "{status}");
    let server = start(&data);
    let c = server.client();
    let ids = ids_of(&c, "fill");
    assert_eq!(ids, acked);
    assert!(!ids.contains(&refused_id) && !ids.contains(&refused_again));
    assert_eq!(c.get("/health").status, 200);
    drop(server);
    drop(fs);
}
