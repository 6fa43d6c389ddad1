//! The projection series of `GET /metrics`.

use std::fmt::Write as _;

use super::Projections;

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Appends per-projection lag, position, events processed and status to `out`.
pub(crate) fn render(projections: &Projections, out: &mut String) {
    let Ok(views) = projections.list() else {
        return;
    };
    let series: [(&str, &str, &str); 4] = [
        (
            "strata_projection_lag",
            "gauge",
            "Events behind the head of the projection's source.",
        ),
        (
            "strata_projection_position",
            "gauge",
            "Log position of the last event the projection applied (-1 before any).",
        ),
        (
            "strata_projection_events_processed_total",
            "counter",
            "Events applied by the projection's current incarnation.",
        ),
        (
            "strata_projection_status",
            "gauge",
            "1 for the projection's status (running, stopped, faulted), else 0.",
        ),
    ];
    for (name, kind, help) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for v in &views {
            let p = label(&v.status.name);
            match name {
                "strata_projection_lag" => {
                    let _ = writeln!(out, "{name}{{projection=\"{p}\"}} {}", v.status.lag);
                }
                "strata_projection_position" => {
                    let pos = v.status.position.map_or(-1.0, |x| x as f64);
                    let _ = writeln!(out, "{name}{{projection=\"{p}\"}} {pos}");
                }
                "strata_projection_events_processed_total" => {
                    let _ = writeln!(
                        out,
                        "{name}{{projection=\"{p}\"}} {}",
                        v.status.events_processed
                    );
                }
                _ => {
                    for s in ["running", "stopped", "faulted"] {
                        let on = u8::from(v.status.state.as_str() == s);
                        let _ = writeln!(out, "{name}{{projection=\"{p}\",status=\"{s}\"}} {on}");
                    }
                }
            }
        }
    }
}
