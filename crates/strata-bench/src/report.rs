//! Measurements and their report: [`Latencies`] (nearest-rank quantiles), the progress bars on
//! stderr, and the [`Report`] printed on stdout (Markdown tables: median, min and max over the
//! runs).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Latencies in µs, sorted, and their nearest-rank quantiles.
pub(crate) struct Latencies(pub(crate) Vec<u32>);

impl Latencies {
    pub(crate) fn new(mut v: Vec<u32>) -> Self {
        v.sort_unstable();
        Latencies(v)
    }

    pub(crate) fn q(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let rank = (q * self.0.len() as f64).ceil() as usize;
        f64::from(self.0[rank.clamp(1, self.0.len()) - 1])
    }
}

pub(crate) fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

/// A progress bar over a fixed time, showing the running rate.
pub(crate) fn timed_bar(label: &str, len: Duration) -> ProgressBar {
    let bar = ProgressBar::new(len.as_millis() as u64);
    if let Ok(style) = ProgressStyle::with_template("{prefix:<34} [{bar:30}] {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_owned());
    bar
}

/// A progress bar over `len` events, showing the count and the rate.
pub(crate) fn count_bar(label: &str, len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:<34} [{bar:30}] {human_pos}/{human_len} {per_sec}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_owned());
    bar
}

/// Updates `bar` with the elapsed time and `count`'s rate until aborted.
pub(crate) fn tick(
    bar: ProgressBar,
    start: Instant,
    count: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(200));
        loop {
            every.tick().await;
            let secs = start.elapsed().as_secs_f64();
            bar.set_position(start.elapsed().as_millis() as u64);
            let n = count.load(Relaxed);
            bar.set_message(format!(
                "{} events, {}/s",
                fmt_num(n as f64),
                fmt_num(n as f64 / secs)
            ));
        }
    })
}

/// Per (scenario, config, metric), one value per run; printed as median (min–max).
pub(crate) struct Report {
    pub(crate) header: String,
    pub(crate) footer: String,
    pub(crate) rows: Vec<(String, String, String, Vec<f64>)>,
}

impl Report {
    pub(crate) fn new(header: String) -> Self {
        Report {
            header,
            footer: String::new(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn add(&mut self, scenario: &str, config: &str, metric: &str, value: f64) {
        match self
            .rows
            .iter_mut()
            .find(|r| r.0 == scenario && r.1 == config && r.2 == metric)
        {
            Some(row) => row.3.push(value),
            None => self
                .rows
                .push((scenario.into(), config.into(), metric.into(), vec![value])),
        }
    }

    pub(crate) fn print(&self) {
        println!("\n{}\n", self.header);
        let mut scenario = None;
        for (s, config, metric, values) in &self.rows {
            if scenario != Some(s) {
                scenario = Some(s);
                println!("\n### {s}\n");
                println!("| config | metric | median | min | max |");
                println!("|---|---|--:|--:|--:|");
            }
            let mut v = values.clone();
            v.sort_by(f64::total_cmp);
            let median = if v.len() % 2 == 1 {
                v[v.len() / 2]
            } else {
                (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
            };
            println!(
                "| {config} | {metric} | {} | {} | {} |",
                fmt_num(median),
                fmt_num(v[0]),
                fmt_num(v[v.len() - 1])
            );
        }
        println!("\n{}", self.footer);
    }
}

/// `1,234,567` for large numbers, 1–2 decimals for small ones.
pub(crate) fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return "—".into();
    }
    if x.abs() < 10.0 {
        return format!("{x:.2}");
    }
    if x.abs() < 100.0 {
        return format!("{x:.1}");
    }
    let digits = (x.round() as i64).unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 {
        out.insert(0, '-');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(fmt_num(1_234_567.4), "1,234,567");
        assert_eq!(fmt_num(123.0), "123");
        assert_eq!(fmt_num(42.25), "42.2");
        assert_eq!(fmt_num(0.5), "0.50");
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let l = Latencies::new((1..=1000).rev().collect());
        assert_eq!(l.q(0.5), 500.0);
        assert_eq!(l.q(0.99), 990.0);
        assert_eq!(l.q(0.999), 999.0);
        assert_eq!(l.q(1.0), 1000.0);
        assert!(Latencies::new(Vec::new()).q(0.5).is_nan());
    }
}
