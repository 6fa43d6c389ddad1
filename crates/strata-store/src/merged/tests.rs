//! Unit tests of the merged index format: round trips through one and two levels against a
//! naive model, windows of straddling segments, damaged and stale files.

use std::path::Path;

use proptest::prelude::*;

use super::format::*;
use super::read::MergedIndex;
use super::write::{write_merged, MergeError, MergeSpec, Source};
use crate::error::Error;
use crate::index_file::{write_index, IdEntry, IndexInput, SegmentIndex, StreamEntry};

/// A segment index of `n` events from `first`: event `i` of stream `hash = key(i)`.
fn segment(dir: &Path, first: u64, events: &[(u64, u64, u128)]) -> SegmentIndex {
    let path = dir.join(format!("{first:020}.idx"));
    let n = events.len() as u64;
    let input = IndexInput {
        first_position: first,
        segment_len: 64 + n * 10,
        offsets: (0..n).map(|i| 64 + i * 10).collect(),
        streams: events
            .iter()
            .enumerate()
            .map(|(i, &(hash, revision, _))| StreamEntry {
                hash,
                revision,
                position: first + i as u64,
            })
            .collect(),
        ids: events
            .iter()
            .map(|&(hash, revision, id)| IdEntry {
                stream_hash: hash,
                id,
                revision,
            })
            .collect(),
        ..IndexInput::default()
    };
    write_index(&path, input).expect("write index");
    SegmentIndex::open(&path, first, 64 + n * 10).expect("open index")
}

/// Events `(hash, revision, id)` for positions `0..n` over `streams` streams, revisions dense.
fn history(n: u64, streams: u64) -> Vec<(u64, u64, u128)> {
    let mut next = vec![0u64; streams as usize];
    (0..n)
        .map(|p| {
            let h = (p * 7 + p / 3) % streams;
            let r = next[h as usize];
            next[h as usize] += 1;
            (h, r, u128::from(p) * 0x1_0000_0001 + 5)
        })
        .collect()
}

fn never() -> bool {
    false
}

fn merge(
    dir: &Path,
    level: u32,
    range: std::ops::Range<u64>,
    sources: Vec<Source<'_>>,
) -> MergedIndex {
    write_merged(
        MergeSpec {
            dir,
            level,
            range,
            sources,
        },
        &never,
    )
    .expect("merge")
}

/// Every query of `m` equals the naive answer over `events[range]`.
fn check_against_model(m: &MergedIndex, events: &[(u64, u64, u128)], streams: u64) {
    m.verify_checksum().expect("checksum");
    let r = m.range();
    let slice: Vec<(u64, (u64, u64, u128))> =
        (r.start..r.end).map(|p| (p, events[p as usize])).collect();
    for h in 0..streams + 2 {
        let mut want: Vec<StreamEntry> = slice
            .iter()
            .filter(|(_, e)| e.0 == h)
            .map(|&(p, e)| StreamEntry {
                hash: h,
                revision: e.1,
                position: p,
            })
            .collect();
        want.sort_by_key(|e| (e.revision, e.position));
        if !want.is_empty() {
            assert!(m.may_contain_stream(h));
        }
        assert_eq!(m.stream_entries(h, 0, u64::MAX), want, "hash {h}");
        assert_eq!(m.last_stream_entry(h), want.last().copied());
        let some: Vec<_> = want
            .iter()
            .copied()
            .filter(|e| (2..=4).contains(&e.revision))
            .collect();
        assert_eq!(m.stream_entries(h, 2, 4), some);
    }
    for &(_, (h, rev, id)) in &slice {
        assert_eq!(m.find_id(h, id), vec![rev]);
        assert!(m.find_id(h ^ 1, id).is_empty() || (h ^ 1) >= streams);
    }
}

#[test]
fn two_levels_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = history(300, 13);
    // 30 segments of 10 events; three level-1 files of 10 segments; one level-2 file.
    let segs: Vec<SegmentIndex> = (0..30)
        .map(|s| {
            segment(
                dir.path(),
                s * 10,
                &events[(s * 10) as usize..(s * 10 + 10) as usize],
            )
        })
        .collect();
    let mut level1 = Vec::new();
    for chunk in 0..3u64 {
        let sources = segs[(chunk * 10) as usize..(chunk * 10 + 10) as usize]
            .iter()
            .map(|index| Source::Segment {
                index,
                window: 0..u64::MAX,
            })
            .collect();
        let m = merge(dir.path(), 1, chunk * 100..chunk * 100 + 100, sources);
        assert_eq!(m.level(), 1);
        check_against_model(&m, &events, 13);
        level1.push(m);
    }
    let m2 = merge(
        dir.path(),
        2,
        0..300,
        level1.iter().map(Source::Merged).collect(),
    );
    assert_eq!(m2.level(), 2);
    check_against_model(&m2, &events, 13);
    // Reopened from disk: the same.
    let again = MergedIndex::open(m2.path(), 0, 300).expect("reopen");
    check_against_model(&again, &events, 13);
    assert!(!dir
        .path()
        .join(format!("{}.tmp", merged_file_name(0, 300)))
        .exists());
}

#[test]
fn a_window_takes_only_its_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = history(40, 3);
    let a = segment(dir.path(), 0, &events[0..20]);
    let b = segment(dir.path(), 20, &events[20..40]);
    let m = merge(
        dir.path(),
        1,
        5..35,
        vec![
            Source::Segment {
                index: &a,
                window: 5..20,
            },
            Source::Segment {
                index: &b,
                window: 20..35,
            },
        ],
    );
    assert_eq!(m.stream_count(), 30);
    let positions: Vec<u64> = (0..m.stream_count())
        .map(|i| m.stream_at(i).position)
        .collect();
    assert!(positions.iter().all(|p| (5..35).contains(p)));
    // An entry outside the declared range is refused, no file left behind.
    let r = write_merged(
        MergeSpec {
            dir: dir.path(),
            level: 1,
            range: 0..10,
            sources: vec![Source::Segment {
                index: &a,
                window: 0..20,
            }],
        },
        &never,
    );
    assert!(matches!(
        r,
        Err(MergeError::Failed(Error::InvalidInput { .. }))
    ));
    assert!(!dir.path().join(merged_file_name(0, 10)).exists());
    assert!(!dir
        .path()
        .join(format!("{}.tmp", merged_file_name(0, 10)))
        .exists());
}

#[test]
fn a_stopped_merge_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = history(10, 2);
    let a = segment(dir.path(), 0, &events);
    let r = write_merged(
        MergeSpec {
            dir: dir.path(),
            level: 1,
            range: 0..10,
            sources: vec![Source::Segment {
                index: &a,
                window: 0..10,
            }],
        },
        &|| true,
    );
    assert!(matches!(r, Err(MergeError::Stopped)));
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("midx"))
        .collect();
    assert!(left.is_empty());
}

#[test]
fn damaged_files_are_refused_at_open_or_by_the_checksum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = history(50, 4);
    let a = segment(dir.path(), 0, &events);
    let m = merge(
        dir.path(),
        1,
        0..50,
        vec![Source::Segment {
            index: &a,
            window: 0..50,
        }],
    );
    let path = m.path().to_path_buf();
    drop(m);
    let good = std::fs::read(&path).expect("read");
    // Wrong range for its name.
    assert!(MergedIndex::open(&path, 0, 51).is_err());
    // A flipped header byte: refused at open.
    for at in [0, 9, 17, 25, 41, 50, 113] {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        std::fs::write(&path, &bad).expect("write");
        assert!(MergedIndex::open(&path, 0, 50).is_err(), "byte {at}");
    }
    // A flipped body byte: opens (headers only), fails its checksum.
    let mut bad = good.clone();
    bad[MERGED_HEADER_LEN + 3] ^= 1;
    std::fs::write(&path, &bad).expect("write");
    let m = MergedIndex::open(&path, 0, 50).expect("header intact");
    assert!(m.verify_checksum().is_err());
    // Truncated: refused.
    std::fs::write(&path, &good[..good.len() - 8]).expect("write");
    assert!(MergedIndex::open(&path, 0, 50).is_err());
    std::fs::write(&path, &good[..10]).expect("write");
    assert!(MergedIndex::open(&path, 0, 50).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any split of a history into segments and any grouping into level-1 files merges into
    /// files that answer like the model.
    #[test]
    fn any_split_matches_the_model(
        n in 1u64..120,
        streams in 1u64..9,
        cuts in proptest::collection::vec(1u64..120, 0..8),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let events = history(n, streams);
        let mut bounds: Vec<u64> = cuts.into_iter().filter(|c| *c < n).collect();
        bounds.push(0);
        bounds.push(n);
        bounds.sort_unstable();
        bounds.dedup();
        let segs: Vec<SegmentIndex> = bounds
            .windows(2)
            .map(|w| segment(dir.path(), w[0], &events[w[0] as usize..w[1] as usize]))
            .collect();
        let m = merge(
            dir.path(),
            1,
            0..n,
            segs.iter().map(|index| Source::Segment { index, window: 0..u64::MAX }).collect(),
        );
        check_against_model(&m, &events, streams);
    }
}

#[test]
fn uniform_hashes_are_found_by_interpolation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let names: Vec<u64> = (0..500)
        .map(|i| crate::hash::hash_str(&format!("stream-{i}")))
        .collect();
    let mut next = vec![0u64; names.len()];
    let events: Vec<(u64, u64, u128)> = (0..5000u64)
        .map(|p| {
            let s = ((p * 7919) % 500) as usize;
            let r = next[s];
            next[s] += 1;
            (names[s], r, u128::from(p) << 3)
        })
        .collect();
    let segs: Vec<SegmentIndex> = (0..5)
        .map(|k| {
            segment(
                dir.path(),
                k * 1000,
                &events[(k * 1000) as usize..(k * 1000 + 1000) as usize],
            )
        })
        .collect();
    let m = merge(
        dir.path(),
        1,
        0..5000,
        segs.iter()
            .map(|index| Source::Segment {
                index,
                window: 0..u64::MAX,
            })
            .collect(),
    );
    for (s, &h) in names.iter().enumerate() {
        let all = m.stream_entries(h, 0, u64::MAX);
        assert_eq!(all.len() as u64, next[s]);
        assert!(all.iter().all(|e| e.hash == h));
        assert!(all.windows(2).all(|w| w[0].revision < w[1].revision));
        assert_eq!(
            m.last_stream_entry(h).map(|e| e.revision),
            Some(next[s] - 1)
        );
        assert_eq!(m.stream_entries(h, 3, 4).len(), 2);
        assert!(m.last_stream_entry(h ^ 0x8000_0000_0000_0000).is_none());
    }
    for (p, &(h, r, id)) in events.iter().enumerate() {
        assert_eq!(m.find_id(h, id), vec![r], "position {p}");
    }
    assert!(m.stream_entries(0, 0, u64::MAX).is_empty());
    assert!(m.stream_entries(u64::MAX, 0, u64::MAX).is_empty());
}
