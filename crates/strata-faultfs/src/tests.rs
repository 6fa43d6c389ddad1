//! Unit tests of the model: what a cut keeps, what a fault refuses.

use super::*;
use fuser::{Errno, RenameFlags};
use std::ffi::OsStr;

fn file<'a>(model: &'a Model, path: &[&str]) -> Option<&'a FileNode> {
    let mut ino = ROOT;
    for name in path {
        ino = *model.dir(ino).ok()?.live.get(OsStr::new(name))?;
    }
    match model.nodes.get(&ino)? {
        Node::File(f) => Some(f),
        Node::Dir(_) => None,
    }
}

fn new_file(model: &mut Model, name: &str) -> u64 {
    model
        .create(ROOT, OsStr::new(name), Node::File(FileNode::default()))
        .map(|a| a.ino.0)
        .expect("create")
}

#[test]
fn unsynced_writes_and_entries_are_lost() {
    let mut m = Model::new(0, 0);
    let a = new_file(&mut m, "a");
    m.write(a, 0, b"hello").unwrap();
    m.fsync(a).unwrap();
    m.cut(Cut::DropUnsynced);
    // The file was fsynced but its directory entry never was.
    assert!(file(&m, &["a"]).is_none());

    let a = new_file(&mut m, "a");
    m.fsync(ROOT).unwrap();
    m.write(a, 0, b"hello").unwrap();
    m.cut(Cut::DropUnsynced);
    assert_eq!(file(&m, &["a"]).map(|f| f.live.clone()), Some(vec![]));

    let a = *m.dir(ROOT).unwrap().live.get(OsStr::new("a")).unwrap();
    m.write(a, 0, b"hello").unwrap();
    m.fsync(a).unwrap();
    m.write(a, 5, b" world").unwrap();
    m.set_len(a, 2).unwrap();
    m.cut(Cut::DropUnsynced);
    assert_eq!(file(&m, &["a"]).unwrap().live, b"hello");
}

#[test]
fn rename_is_durable_at_the_directory_fsync() {
    let mut m = Model::new(0, 0);
    let t = new_file(&mut m, "t");
    m.write(t, 0, b"new").unwrap();
    m.fsync(t).unwrap();
    m.fsync(ROOT).unwrap();
    m.rename(
        ROOT,
        OsStr::new("t"),
        ROOT,
        OsStr::new("f"),
        RenameFlags::empty(),
    )
    .unwrap();
    m.cut(Cut::DropUnsynced);
    assert!(file(&m, &["f"]).is_none());
    assert_eq!(file(&m, &["t"]).unwrap().live, b"new");
    m.rename(
        ROOT,
        OsStr::new("t"),
        ROOT,
        OsStr::new("f"),
        RenameFlags::empty(),
    )
    .unwrap();
    m.fsync(ROOT).unwrap();
    m.cut(Cut::DropUnsynced);
    assert!(file(&m, &["t"]).is_none());
    assert_eq!(file(&m, &["f"]).unwrap().live, b"new");
}

#[test]
fn torn_cuts_keep_an_in_order_prefix() {
    for seed in 0..200 {
        let mut m = Model::new(0, 0);
        let a = new_file(&mut m, "a");
        m.fsync(ROOT).unwrap();
        m.write(a, 0, &[1; 1000]).unwrap();
        m.fsync(a).unwrap();
        m.write(a, 1000, &[2; 2000]).unwrap();
        m.write(a, 3000, &[3; 100]).unwrap();
        m.cut(Cut::Torn { seed });
        let live = &file(&m, &["a"]).unwrap().live;
        assert_eq!(&live[..1000], &[1; 1000][..], "seed {seed}");
        // Some prefix of the unsynced bytes, 2s then 3s, nothing after a gap.
        let rest = &live[1000..];
        let twos = rest.iter().take_while(|&&b| b == 2).count();
        assert!(rest[twos..].iter().all(|&b| b == 3), "seed {seed}");
        assert!(twos == 2000 || rest.len() == twos, "seed {seed}");
        assert!(
            matches!(rest.len(), 0 | 2000 | 2100) || (1000 + rest.len()).is_multiple_of(512),
            "seed {seed}: {} bytes",
            rest.len()
        );
    }
}

#[test]
fn faults_and_freezes_fail_with_eio_and_change_nothing() {
    let mut m = Model::new(0, 0);
    let a = new_file(&mut m, "a");
    m.fsync(ROOT).unwrap();
    m.fault = Some(Fault::FsyncEio);
    m.write(a, 0, b"x").unwrap();
    assert_eq!(m.fsync(a), Err(Errno::EIO));
    m.fault = Some(Fault::WriteEio);
    assert_eq!(m.write(a, 1, b"y"), Err(Errno::EIO));
    m.fault = None;
    m.cut(Cut::DropUnsynced);
    assert_eq!(file(&m, &["a"]).unwrap().live, b"");

    m.ops_left = Some(1);
    m.write(a, 0, b"1").unwrap();
    assert_eq!(m.fsync(a), Err(Errno::EIO));
    assert_eq!(m.write(a, 1, b"2"), Err(Errno::EIO));
    assert!(m.frozen);
    let report = m.cut(Cut::DropUnsynced);
    assert!(report.frozen);
    assert_eq!(report.frozen_at.as_deref(), Some("fsync /a"));
    assert_eq!(file(&m, &["a"]).unwrap().live, b"");
    m.write(a, 0, b"3").unwrap();
    m.fsync(a).unwrap();
}
