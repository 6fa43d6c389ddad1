//! `/proc` probes (Linux): the CPU time the server and the generator spend during a run, and the
//! load average. Where `/proc` is not available the figures are left out of the report.

use crate::report::{fmt_num, Report};

/// CPU time (user + system) of a process, every thread it ever had included, in ns, from
/// `/proc/<pid>/stat` (`pid` may be `self`), at the kernel's clock-tick resolution (10 ms at the
/// usual 100 Hz: 0.2 % of one core over a 5 s run). Threads that exited during the run (tokio's
/// blocking pool retires idle threads) still count, which a sum over `/proc/<pid>/task/*` would
/// miss. `None` where that is not available.
pub(crate) fn cpu_ns(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields count from after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // Fields 14 and 15 of proc(5), utime and stime; `rest` starts at field 3.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|&t| t > 0)?;
    Some((utime + stime) * 1_000_000_000 / ticks)
}

/// Measures the CPU time the server (given its PID) and this process spend during a run.
pub(crate) struct CpuProbe {
    pub(crate) server_pid: Option<String>,
    pub(crate) server: Option<u64>,
    pub(crate) client: Option<u64>,
}

/// CPU seconds used during a run by the server (if its PID was given) and by the generator.
#[derive(Clone, Copy, Default)]
pub(crate) struct CpuUse {
    pub(crate) server: Option<f64>,
    pub(crate) client: Option<f64>,
}

impl CpuProbe {
    pub(crate) fn start(server_pid: Option<u32>) -> CpuProbe {
        let server_pid = server_pid.map(|p| p.to_string());
        CpuProbe {
            server: server_pid.as_deref().and_then(cpu_ns),
            server_pid,
            client: cpu_ns("self"),
        }
    }

    pub(crate) fn stop(self) -> CpuUse {
        let spent = |before: Option<u64>, after: Option<u64>| {
            Some(after?.saturating_sub(before?) as f64 / 1e9)
        };
        CpuUse {
            server: spent(self.server, self.server_pid.as_deref().and_then(cpu_ns)),
            client: spent(self.client, cpu_ns("self")),
        }
    }
}

impl CpuUse {
    /// `"; server CPU x µs, generator CPU y µs per <unit>"` for the parts known.
    pub(crate) fn summary(&self, units: u64, unit: &str) -> String {
        let per = |s: f64| fmt_num(s * 1e6 / units.max(1) as f64);
        match (self.server, self.client) {
            (Some(s), Some(c)) => format!(
                "; CPU per {unit}: server {} µs, generator {} µs",
                per(s),
                per(c)
            ),
            (None, Some(c)) => format!("; generator CPU per {unit}: {} µs", per(c)),
            _ => String::new(),
        }
    }

    pub(crate) fn record(
        &self,
        report: &mut Report,
        scenario: &str,
        config: &str,
        units: u64,
        unit: &str,
    ) {
        let per = |s: f64| s * 1e6 / units.max(1) as f64;
        if let Some(s) = self.server {
            report.add(
                scenario,
                config,
                &format!("server CPU µs per {unit}"),
                per(s),
            );
        }
        if let Some(c) = self.client {
            report.add(
                scenario,
                config,
                &format!("generator CPU µs per {unit}"),
                per(c),
            );
        }
    }
}

/// The 1-minute load average (Linux), for the record.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_grows() {
        let before = cpu_ns("self").unwrap();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        // Until the next clock tick is charged (bounded, on a machine too busy to run us).
        while cpu_ns("self").unwrap() == before && start.elapsed().as_secs() < 5 {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        assert!(cpu_ns("self").unwrap() > before);
    }
}
