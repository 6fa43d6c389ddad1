//! Tests through a real FUSE mount (skipped where FUSE cannot be mounted).

use super::*;
use std::io::Write;

/// Through the kernel: a file fsynced with its directory survives a cut, an unsynced one
/// does not. Skipped (with the reason printed) where FUSE cannot be mounted, except in CI.
#[test]
fn a_cut_through_the_mount_keeps_exactly_what_was_synced() {
    let dir = std::env::temp_dir().join(format!("faultfs-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mount point");
    let mut fs = match FaultFs::mount(&dir) {
        Ok(fs) => fs,
        Err(e) => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{e}");
            eprintln!("SKIPPED: cannot mount a FUSE file system here: {e}");
            return;
        }
    };
    {
        let mut a = std::fs::File::create(dir.join("a")).expect("create a");
        a.write_all(b"synced").expect("write a");
        a.sync_all().expect("fsync a");
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .expect("fsync dir");
        a.write_all(b" and not").expect("write a again");
        std::fs::write(dir.join("b"), b"never synced").expect("write b");
    }
    assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"synced and not");
    fs.power_cut(Cut::DropUnsynced).expect("power cut");
    assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"synced");
    assert!(!dir.join("b").exists());
    drop(fs);
    let _ = std::fs::remove_dir(&dir);
}
