//! The `scavenge` scenario: an unthrottled scavenge's throughput against the raw sequential
//! write bandwidth of the same directory, measured in the same repetition. Half of the events
//! are removable (their streams soft-deleted); the scavenge then rewrites every sealed segment
//! to about half its size and merges the halves. Throughput is the sealed bytes processed per
//! second (`bytes_before / s`: what a scavenge of that much history takes); the bytes written
//! per second are shown beside it.

use std::time::Instant;

use strata_store::{ExpectedRevision, FsyncPolicy, ScavengeOptions, Store};

use super::{
    bulk_build, median, options, progress, raw_seq, target_line, Bench, BoxResult, Table, MIB,
};

impl Bench {
    pub(super) fn scavenge(&self) -> BoxResult<()> {
        let appends: u64 = if self.quick { 20_000 } else { 60_000 };
        let per_append = 10;
        let streams = 1000;
        let mut processed = Vec::new();
        let mut written = Vec::new();
        let mut raw = Vec::new();
        let mut ratio = Vec::new();
        let mut reclaimed = Vec::new();
        for rep in 0..self.reps(false) {
            progress(format!("scavenge rep {}: building", rep + 1));
            let dir = self.fresh_dir()?;
            let store = Store::open(dir.path(), options(FsyncPolicy::Never, 16 * MIB))?;
            let name = |k: u64| {
                let s = k % (2 * streams);
                if s.is_multiple_of(2) {
                    format!("keep-{s}")
                } else {
                    format!("gone-{s}")
                }
            };
            bulk_build(&store, 0, appends, per_append, 2, &name)?;
            for s in (1..2 * streams).step_by(2) {
                store.delete_stream(&format!("gone-{s}"), ExpectedRevision::Any, false)?;
            }
            store.flush()?;
            progress(format!("scavenge rep {}: scavenging", rep + 1));
            let t = Instant::now();
            let p = store.scavenge(ScavengeOptions::default(), &mut |_| {})?;
            let secs = t.elapsed().as_secs_f64();
            let mb_in = p.bytes_before as f64 / 1e6 / secs;
            // What it wrote: the new files of the segments rewritten and merged.
            let mb_out = p.bytes_after as f64 / 1e6 / secs;
            store.close()?;
            drop(store);
            progress(format!("scavenge rep {}: raw sequential writes", rep + 1));
            let seq = raw_seq(dir.path(), p.bytes_before.max(64 * MIB))?;
            processed.push(mb_in);
            written.push(mb_out);
            raw.push(seq);
            ratio.push(mb_in / seq);
            reclaimed.push(p.bytes_reclaimed as f64 / p.bytes_before.max(1) as f64 * 100.0);
        }
        let mut t = Table::new(format!(
            "Scavenge, unthrottled: {appends} appends of {per_append} events of 256 B into {} streams (16 MiB segments), half of the streams soft-deleted; against raw sequential writes of as many bytes in the same directory",
            2 * streams
        ));
        t.row("scavenge", "sealed MB processed / s", processed);
        t.row("scavenge", "MB of new files / s (≈ written)", written);
        t.row("scavenge", "% of the sealed bytes reclaimed", reclaimed);
        t.row("raw disk", "sequential write MB/s", raw);
        t.row("ratio", "scavenge / raw sequential", ratio.clone());
        t.print();
        println!();
        let r = median(&ratio);
        target_line(
            "scavenge throughput vs sequential write bandwidth",
            r,
            "≥ 0.5",
            r >= 0.5,
        );
        Ok(())
    }
}
