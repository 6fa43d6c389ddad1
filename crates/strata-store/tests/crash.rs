//! Crash tests with real process death.
//!
//! `sigkill_rounds_lose_no_acknowledged_append` re-executes this test binary as a child that
//! appends in a loop (the `child_writer` test, which does nothing unless `STRATA_CRASH_CHILD_DIR`
//! is set) and kills it with SIGKILL at a random moment, many times over one data directory.
//! After every kill the parent reopens the store and checks every acknowledged append.
//!
//! `every_cut_inside_the_last_append_recovers_the_previous_commit` truncates the last segment at
//! every byte offset of its last append.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use strata_store::{
    ExpectedRevision, FsyncPolicy, Health, NewEvent, Options, RecordedEvent, Store,
};

const CHILD_DIR: &str = "STRATA_CRASH_CHILD_DIR";
const CHILD_THREADS: &str = "STRATA_CRASH_CHILD_THREADS";
const CHILD_SEED: &str = "STRATA_CRASH_CHILD_SEED";
const CHILD_ROUND: &str = "STRATA_CRASH_CHILD_ROUND";

/// Small segments so that segments are sealed (and kills land in sealing) during the test.
fn crash_opts() -> Options {
    Options {
        segment_size: 64 * 1024,
        fsync: FsyncPolicy::Always,
        // Smaller than the number of streams: heads are looked up in the indexes again.
        head_cache_capacity: 4,
        ..Options::default()
    }
}

fn env_u64(name: &str) -> u64 {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} not set"))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number"))
}

/// One line on stdout, written with a single `write` only after everything before it happened.
fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    out.write_all(format!("{line}\n").as_bytes())
        .and_then(|()| out.flush())
        .expect("child stdout");
}

/// The child process: appends until killed. A no-op in normal test runs.
#[test]
fn child_writer() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let threads = env_u64(CHILD_THREADS) as usize;
    let seed = env_u64(CHILD_SEED);
    let round = env_u64(CHILD_ROUND);
    let store = match Store::open(&dir, crash_opts()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("child: open failed: {e}");
            std::process::exit(2);
        }
    };
    if store.health() != Health::Ok {
        eprintln!("child: store not healthy: {:?}", store.health());
        std::process::exit(2);
    }
    // The harness has printed "test child_writer ... " without a newline.
    emit("\nREADY");
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed ^ ((t as u64 + 1) * 0x9E37_79B9));
                // Each thread owns one stream (exact expected revisions, checked against the
                // recovered heads) and shares three others with every thread.
                let own = format!("acct-{t}");
                let mut own_last = store.head(&own).expect("head").last_revision;
                for seq in 0.. {
                    if start.elapsed() > Duration::from_secs(30) {
                        eprintln!("child: not killed after 30 s");
                        std::process::exit(4);
                    }
                    let (stream, expected) = if threads == 1 || rng.chance(50) {
                        let exp =
                            own_last.map_or(ExpectedRevision::NoStream, ExpectedRevision::Exact);
                        (own.clone(), exp)
                    } else {
                        (format!("shared-{}", rng.below(3)), ExpectedRevision::Any)
                    };
                    let n = rng.range(1, 6) as usize;
                    let tag = format!("r{round}t{t}s{seq}");
                    let (events, ids) = tagged_events(&mut rng, &tag, n, 300);
                    match store.append(&stream, expected, events) {
                        Ok(r) => {
                            if stream == own {
                                own_last = Some(r.last_revision);
                            }
                            emit(&Ack::new(&stream, &r, ids).to_line());
                        }
                        Err(e) => {
                            eprintln!("child: append {tag} to {stream} ({expected}) failed: {e}");
                            std::process::exit(3);
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("child thread");
    }
}

/// Runs one child until it is killed; returns the acknowledgements it printed.
fn run_child_and_kill(
    dir: &Path,
    round: u64,
    threads: usize,
    seed: u64,
    kill_after: Duration,
) -> Vec<Ack> {
    let stderr_path = dir.with_extension(format!("child-{round}.stderr"));
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut child = Command::new(std::env::current_exe().expect("current_exe"))
        .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .env(CHILD_THREADS, threads.to_string())
        .env(CHILD_SEED, seed.to_string())
        .env(CHILD_ROUND, round.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let (ready_tx, ready_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut acks = Vec::new();
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            // A line cut by the kill is not an acknowledgement (lines are written whole, so this
            // does not happen in practice).
            let Some(text) = line.strip_suffix(b"\n") else {
                break;
            };
            let text = String::from_utf8_lossy(text);
            if text == "READY" {
                let _ = ready_tx.send(());
            } else if let Some(ack) = Ack::parse_line(&text) {
                acks.push(ack);
            }
        }
        acks
    });
    let ready = ready_rx.recv_timeout(Duration::from_secs(30));
    if ready.is_ok() {
        std::thread::sleep(kill_after);
    }
    let _ = child.kill(); // SIGKILL
    let status = child.wait().expect("wait child");
    let acks = reader.join().expect("reader thread");
    let child_err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        ready.is_ok(),
        "round {round}: child never became ready ({status}); stderr:\n{child_err}"
    );
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "round {round}: child exited by itself ({status}); stderr:\n{child_err}"
    );
    let _ = std::fs::remove_file(&stderr_path);
    acks
}

/// What a kill left behind, before recovery.
#[derive(Default)]
struct Damage {
    torn_tails: usize,
    missing_indexes: usize,
}

/// Reopens after a crash and checks everything; returns the events of the log.
fn check_after_crash(
    dir: &Path,
    acks: &[Ack],
    round: u64,
    damage: &mut Damage,
) -> Vec<RecordedEvent> {
    // Before recovery: the segments hold no corruption (a torn tail is a note). An index file
    // may be missing if the kill hit the sealing of a segment: that is rebuilt on open.
    let report = strata_store::verify::verify_dir(dir, |_, _| {}).expect("verify_dir");
    for p in &report.problems {
        assert!(
            p.contains(".idx") && p.contains("rebuilt on next open"),
            "round {round}: verify_dir before reopen found {p}"
        );
    }
    damage.missing_indexes += report.problems.len();
    damage.torn_tails += report.notes.len();
    let store = Store::open(dir, crash_opts())
        .unwrap_or_else(|e| panic!("round {round}: reopen after SIGKILL failed: {e}"));
    assert_eq!(store.health(), Health::Ok, "round {round}");
    let events = check_log(&store, acks);
    drop(store);
    let notes = assert_verify_clean(dir);
    assert!(
        notes.is_empty(),
        "round {round}: recovery left a torn tail behind: {notes:?}"
    );
    events
}

#[test]
fn sigkill_rounds_lose_no_acknowledged_append() {
    let seed = test_seed("sigkill_rounds");
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let started = Instant::now();
    let mut acks: Vec<Ack> = Vec::new();
    let mut child_acks = 0;
    let mut rounds_with_acks = 0;
    let mut damage = Damage::default();
    const ROUNDS: u64 = 24;
    for round in 0..ROUNDS {
        let threads = [1, 4, 2, 8][round as usize % 4];
        // Mostly mid-run kills; some right after start (during the first appends).
        let kill_after = if rng.chance(20) {
            Duration::from_millis(rng.range(0, 5))
        } else {
            Duration::from_millis(rng.range(20, 300))
        };
        let got = run_child_and_kill(&dir, round, threads, rng.next_u64(), kill_after);
        child_acks += got.len();
        rounds_with_acks += usize::from(!got.is_empty());
        acks.extend(got);
        let events = check_after_crash(&dir, &acks, round, &mut damage);

        // Appending works again, at the next revision and position.
        let store = Store::open(&dir, crash_opts()).expect("reopen");
        let stream = "parent-check";
        let last = store.head(stream).expect("head").last_revision;
        let (evs, ids) = tagged_events(&mut rng, &format!("p{round}"), 2, 10);
        let r = store
            .append(
                stream,
                last.map_or(ExpectedRevision::NoStream, ExpectedRevision::Exact),
                evs,
            )
            .unwrap_or_else(|e| panic!("round {round}: append after recovery failed: {e}"));
        assert_eq!(r.first_position, events.len() as u64, "round {round}");
        assert_eq!(r.first_revision, last.map_or(0, |l| l + 1), "round {round}");
        assert!(!r.idempotent_replay);
        acks.push(Ack::new(stream, &r, ids));
        // Retries of acknowledged appends (old ones in sealed segments, recent ones in the
        // recovered open segment) are recognised by id and answer the original result.
        for k in 0..6 {
            let ack = if k < 3 {
                &acks[rng.below(acks.len())]
            } else {
                &acks[acks.len() - 1 - rng.below(acks.len().min(20))]
            };
            let retry = ack
                .ids
                .iter()
                .map(|id| NewEvent::json("Retry", "{}").with_id(*id))
                .collect();
            let r = store
                .append(&ack.stream, ExpectedRevision::Any, retry)
                .unwrap_or_else(|e| panic!("round {round}: retry of {ack:?}: {e}"));
            assert!(
                r.idempotent_replay,
                "round {round}: retry of {ack:?} wrote again: {r:?}"
            );
            assert_eq!(
                (r.first_revision, r.first_position),
                (ack.first_revision, ack.first_position),
                "round {round}: retry of {ack:?}"
            );
        }
        assert_eq!(store.next_position(), events.len() as u64 + 2);
        store.close().expect("close");
    }
    let store = Store::open(&dir, crash_opts()).expect("final open");
    let events = all_events(&store);
    check_dense(&store, &events);
    check_acks(&events, &acks);
    let segs = store.info().segment_count;
    // Appends written but killed before their acknowledgement was printed: legal survivors.
    let acked: std::collections::HashSet<uuid::Uuid> =
        acks.iter().flat_map(|a| a.ids.iter().copied()).collect();
    let unacked_survivors = events.iter().filter(|e| !acked.contains(&e.id)).count();
    eprintln!(
        "sigkill_rounds: {ROUNDS} rounds, {child_acks} child acks, {} events, {segs} segments, \
         {} torn tails and {} missing index files recovered, {unacked_survivors} unacknowledged \
         events survived, {:?}",
        events.len(),
        damage.torn_tails,
        damage.missing_indexes,
        started.elapsed()
    );
    assert!(
        rounds_with_acks as u64 >= ROUNDS / 2,
        "only {rounds_with_acks} of {ROUNDS} rounds acknowledged anything: the kills came too early to test much"
    );
    assert!(segs >= 3, "only {segs} segments: sealing was not exercised");
}

#[test]
fn every_cut_inside_the_last_append_recovers_the_previous_commit() {
    let seed = test_seed("every_cut");
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().join("base");
    let opts = opts(4096);
    let store = Store::open(&base, opts.clone()).expect("open");
    let mut acks = Vec::new();
    for a in 0..40 {
        let stream = format!("cut-{}", a % 3);
        let (evs, ids) = tagged_events(&mut rng, &format!("a{a}"), 1 + a % 3, 40);
        let r = store
            .append(&stream, ExpectedRevision::Any, evs)
            .expect("append");
        acks.push(Ack::new(&stream, &r, ids));
    }
    let before_last = all_events(&store);
    let last_stream = "cut-1";
    let last_rev = store
        .head(last_stream)
        .expect("head")
        .last_revision
        .expect("exists");
    let (last_events, last_ids) = tagged_events(&mut rng, "last", 4, 30);
    let last = store
        .append(
            last_stream,
            ExpectedRevision::Exact(last_rev),
            last_events.clone(),
        )
        .expect("last append");
    let all = all_events(&store);
    store.close().expect("close");
    drop(store);
    assert!(
        segments(&base).len() >= 3,
        "want sealed segments before the last one"
    );

    let seg = segments(&base).pop().expect("a segment");
    let seg_name = seg.file_name().expect("name").to_owned();
    let bytes = std::fs::read(&seg).expect("read segment");
    let fr = frames(&bytes);
    let first = fr
        .iter()
        .find(|f| f.position == last.first_position)
        .expect("the last append's first frame is in the last segment");
    let start = first.offset;
    let end = bytes.len() as u64;
    assert_eq!(
        fr.last().map(|f| f.offset + f.len),
        Some(end),
        "the segment ends with the last append"
    );
    let mut cases = 0;
    for cut in start..=end {
        let case = tempfile::tempdir().expect("tempdir");
        let dir = case.path();
        copy_dir(&base, dir);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join(&seg_name))
            .expect("open segment");
        f.set_len(cut).expect("truncate");
        drop(f);
        let whole = cut == end;
        let expected = if whole { &all } else { &before_last };
        // A read-only open serves the committed prefix and changes nothing on disk.
        {
            let ro = Options {
                read_only: true,
                ..opts.clone()
            };
            let store = Store::open(dir, ro)
                .unwrap_or_else(|e| panic!("cut {cut}: read-only open failed: {e}"));
            assert!(matches!(store.health(), Health::ReadOnly(_)), "cut {cut}");
            assert_eq!(&all_events(&store), expected, "cut {cut}: read-only open");
            drop(store);
            assert_eq!(
                file_len(&dir.join(&seg_name)),
                cut,
                "cut {cut}: read-only open wrote"
            );
        }
        let store = Store::open(dir, opts.clone())
            .unwrap_or_else(|e| panic!("cut {cut}: open failed: {e}"));
        assert_eq!(store.health(), Health::Ok, "cut {cut}");
        let events = all_events(&store);
        assert_eq!(&events, expected, "cut {cut} of [{start}, {end}]");
        check_dense(&store, &events);
        check_whole_appends(&events);
        assert_eq!(
            file_len(&dir.join(&seg_name)),
            if whole { end } else { start },
            "cut {cut}: the torn tail is cut back to the last whole append"
        );
        // A retry of the last append (same ids) is recognised only if it survived; otherwise it
        // is appended anew at the same revision and position.
        let r = store
            .append(
                last_stream,
                ExpectedRevision::Exact(last_rev),
                last_events.clone(),
            )
            .unwrap_or_else(|e| panic!("cut {cut}: retry of the last append failed: {e}"));
        assert_eq!(r.idempotent_replay, whole, "cut {cut}");
        assert_eq!(
            (r.first_revision, r.first_position),
            (last.first_revision, last.first_position),
            "cut {cut}"
        );
        let (evs, _) = tagged_events(&mut rng, "next", 1, 5);
        let n = store
            .append("cut-0", ExpectedRevision::Any, evs)
            .unwrap_or_else(|e| panic!("cut {cut}: append failed: {e}"));
        assert_eq!(n.first_position, all.len() as u64, "cut {cut}");
        let events = all_events(&store);
        check_acks(&events, &acks);
        check_acks(&events, &[Ack::new(last_stream, &last, last_ids.clone())]);
        store.close().expect("close");
        drop(store);
        assert!(assert_verify_clean(dir).is_empty(), "cut {cut}");
        cases += 1;
    }
    eprintln!("every_cut: {cases} cuts of the last append, bytes [{start}, {end}]");
}

/// A segment header (layout in `frame.rs`) for a segment starting at `first_position`.
fn segment_header(first_position: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(32);
    h.extend_from_slice(b"STRATSEG");
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(&32u32.to_le_bytes());
    h.extend_from_slice(&first_position.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

/// The states a crash while sealing a segment can leave (the new segment created but its header
/// not or partly written, a temporary index file left behind, the sealed segment's index not yet
/// written) all recover to the log as it was before the append that triggered the sealing.
#[test]
fn crash_states_while_sealing_a_segment_recover() {
    let mut rng = Rng::new(test_seed("sealing_states"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().join("base");
    let opts = opts(4096);
    let store = Store::open(&base, opts.clone()).expect("open");
    let mut acks = Vec::new();
    let mut a = 0;
    // Append until a segment has just been started by an append.
    let mut segs_before = store.info().segment_count;
    loop {
        let (evs, ids) = tagged_events(&mut rng, &format!("a{a}"), 1 + a % 3, 50);
        let stream = format!("seal-{}", a % 3);
        let r = store
            .append(&stream, ExpectedRevision::Any, evs)
            .expect("append");
        acks.push(Ack::new(&stream, &r, ids));
        a += 1;
        let segs = store.info().segment_count;
        if segs > segs_before {
            if segs >= 3 {
                break;
            }
            segs_before = segs;
        }
    }
    let all = all_events(&store);
    store.close().expect("close");
    drop(store);
    let last_ack = acks
        .pop()
        .expect("the append that started the last segment");
    let newest = segments(&base).pop().expect("segment");
    let newest_name = newest.file_name().expect("name").to_owned();
    assert_eq!(
        newest_name.to_string_lossy(),
        format!("{:020}.seg", last_ack.first_position)
    );
    let prev = segments(&base)
        .into_iter()
        .rev()
        .nth(1)
        .expect("previous segment");
    let prev_idx = prev.with_extension("idx");
    assert!(prev_idx.exists(), "sealing wrote the index");
    let before = &all[..last_ack.first_position as usize];

    type Damage = fn(&Path, &std::ffi::OsStr, &Path);
    let cases: Vec<(&str, Damage)> = vec![
        ("new segment empty", |d, n, _| {
            std::fs::write(d.join(n), b"").expect("write");
        }),
        ("new segment with a partial header", |d, n, _| {
            let first = n.to_string_lossy()[..20].parse().expect("name");
            std::fs::write(d.join(n), &segment_header(first)[..13]).expect("write");
        }),
        ("new segment with only its header", |d, n, _| {
            let first = n.to_string_lossy()[..20].parse().expect("name");
            std::fs::write(d.join(n), segment_header(first)).expect("write");
        }),
        (
            "new segment empty, index of the sealed one missing",
            |d, n, idx| {
                std::fs::write(d.join(n), b"").expect("write");
                std::fs::remove_file(d.join(idx.file_name().expect("name"))).expect("rm");
            },
        ),
        (
            "new segment empty, half-written temporary index left",
            |d, n, idx| {
                std::fs::write(d.join(n), b"").expect("write");
                let name = idx.file_name().expect("name").to_string_lossy().to_string();
                let bytes = std::fs::read(idx).expect("read index");
                std::fs::write(d.join(format!("{name}.tmp")), &bytes[..bytes.len() / 2])
                    .expect("write tmp");
            },
        ),
        (
            "no new segment yet, sealed segment's index already written",
            |d, n, _| {
                std::fs::remove_file(d.join(n)).expect("rm");
            },
        ),
    ];
    for (what, damage) in cases {
        let case = tempfile::tempdir().expect("tempdir");
        let dir = case.path();
        copy_dir(&base, dir);
        damage(dir, &newest_name, &prev_idx);
        let store =
            Store::open(dir, opts.clone()).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
        assert_eq!(store.health(), Health::Ok, "{what}");
        assert_eq!(all_events(&store), before, "{what}");
        check_dense(&store, before);
        check_acks(before, &acks);
        // Appending continues at the right position, across further sealing.
        let mut next = before.len() as u64;
        for k in 0..40 {
            let (evs, _) = tagged_events(&mut rng, &format!("{what}-{k}"), 2, 50);
            let r = store
                .append("seal-0", ExpectedRevision::Any, evs)
                .unwrap_or_else(|e| panic!("{what}: append: {e}"));
            assert_eq!(r.first_position, next, "{what}");
            next += 2;
        }
        store.close().expect("close");
        drop(store);
        assert!(assert_verify_clean(dir).is_empty(), "{what}");
        let store = Store::open(dir, opts.clone()).expect("reopen");
        let events = all_events(&store);
        check_dense(&store, &events);
        check_whole_appends(&events);
        check_acks(&events, &acks);
        assert_eq!(store.next_position(), next, "{what}");
    }
}

/// The end of the last frame of a segment file (its data; the file may be longer).
fn data_end(path: &Path) -> u64 {
    let bytes = std::fs::read(path).expect("read segment");
    frames(&bytes)
        .last()
        .map_or(SEGMENT_HEADER_LEN, |f| f.offset + f.len)
}

/// The writer extends the open segment's file ahead of its writes (zeros past the data, so that
/// a sync need not record a longer file). A seal and a close cut it back to the data; a crash
/// leaves it, and recovery cuts it and appends right after the last acknowledged append.
#[test]
fn space_extended_ahead_of_the_writer_is_cut_by_seal_close_and_recovery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = crash_opts();
    let store = Store::open(dir.path(), opts.clone()).expect("open");
    let mut rng = Rng::new(test_seed("extended"));
    let mut acks = Vec::new();
    let mut append = |store: &Store, acks: &mut Vec<Ack>, k: usize| {
        let stream = format!("s-{}", k % 13);
        let (events, ids) = tagged_events(&mut rng, &format!("t{k}"), 1 + k % 3, 200);
        let r = store
            .append(&stream, ExpectedRevision::Any, events)
            .expect("append");
        acks.push(Ack::new(&stream, &r, ids));
    };
    for k in 0..1500 {
        append(&store, &mut acks, k);
    }
    let segs = segments(dir.path());
    assert!(segs.len() >= 4, "{segs:?}");
    for s in &segs[..segs.len() - 1] {
        assert_eq!(
            file_len(s),
            data_end(s),
            "sealed {} keeps zeros",
            s.display()
        );
    }
    let open = segs.last().expect("open segment").clone();
    assert!(
        file_len(&open) > data_end(&open),
        "the open segment is extended ahead of the writes: {} vs {}",
        file_len(&open),
        data_end(&open)
    );
    let notes = assert_verify_clean(dir.path());
    assert!(
        notes
            .iter()
            .any(|n| n.contains("zeros past the last append")),
        "{notes:?}"
    );

    // A crash now: the files as the page cache holds them.
    let crashed = tempfile::tempdir().expect("tempdir");
    copy_dir(dir.path(), crashed.path());
    let reopened = Store::open(crashed.path(), opts.clone()).expect("reopen after the crash");
    check_log(&reopened, &acks);
    let copy_open = segments(crashed.path()).last().expect("open").clone();
    assert_eq!(
        file_len(&copy_open),
        data_end(&copy_open),
        "recovery cuts the zeros"
    );
    let mut crashed_acks = acks.clone();
    for k in 1500..1600 {
        append(&reopened, &mut crashed_acks, k);
    }
    reopened.close().expect("close");
    drop(reopened);
    let reopened = Store::open(crashed.path(), opts.clone()).expect("reopen");
    check_log(&reopened, &crashed_acks);
    reopened.close().expect("close");

    // A clean close leaves the open segment as long as its data, and nothing to cut.
    store.close().expect("close");
    drop(store);
    assert_eq!(file_len(&open), data_end(&open));
    let notes = assert_verify_clean(dir.path());
    assert!(notes.is_empty(), "{notes:?}");
    let store = Store::open(dir.path(), opts).expect("reopen");
    check_log(&store, &acks);
    store.close().expect("close");
}
