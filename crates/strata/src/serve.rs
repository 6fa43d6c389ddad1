//! `strata serve`: run the HTTP server until SIGTERM or Ctrl-C.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use strata_server::{Auth, Config, ConnectionLimits, HttpLimits, Server, TlsFiles};

use crate::cli::ServeArgs;
use crate::error::Result;

/// Runs the server; returns once it has shut down cleanly (exit code 0).
pub fn run(args: ServeArgs) -> Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(args.log_level)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = config(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata-http")
        .build()?;
    runtime.block_on(async move {
        let server = Server::bind(config).await?;
        let shutdown = shutdown_signal()?;
        // The line tests and scripts wait for; flushed at once (stdout may be a pipe).
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {}", server.url())?;
        stdout.flush()?;
        drop(stdout);
        tracing::info!(addr = %server.local_addr(), "listening");
        server.run(shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// The server configuration from the flags.
fn config(args: &ServeArgs) -> Result<Config> {
    let mut auth = Auth::none();
    for token in &args.auth_tokens {
        if !token.is_empty() {
            auth.add_admin_token(token.clone());
        }
    }
    if let Some(path) = &args.tokens_file {
        auth.load_tokens_file(path)?;
    }
    let mut config = Config::new(&args.data_dir);
    config.listen = args.listen.clone();
    config.auth = auth;
    config.insecure = args.insecure;
    // clap requires both flags or neither.
    config.tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles::new(cert, key)),
        (None, None) => None,
        _ => {
            return Err(crate::error::Error::Usage(
                "--tls-cert and --tls-key go together: give both or neither".into(),
            ))
        }
    };
    config.limits = HttpLimits {
        max_body_bytes: args.max_body_bytes,
        max_event_bytes: args.max_event_bytes,
        max_events_per_append: args.max_events_per_append,
    };
    config.connections = ConnectionLimits {
        header_read_timeout: Duration::from_secs(args.header_read_timeout),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
    };
    config.shutdown_grace = Duration::from_secs(args.shutdown_grace);
    config.projections.js_limits.memory_bytes =
        usize::try_from(args.projection_memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
    config.projections.js_limits.per_event =
        Duration::from_millis(args.projection_event_timeout_ms);
    config.store.fsync = args.fsync;
    config.store.segment_size = args.segment_size;
    config.store.rebuild_progress = Some(rebuild_progress());
    config.check_history =
        Some(args.check_history_mb_per_s.saturating_mul(1 << 20)).filter(|&r| r > 0);
    let hours = args.scavenge_interval;
    if !(hours.is_finite() && hours >= 0.0) {
        return Err(crate::error::Error::Usage(format!(
            "--scavenge-interval must be a number of hours ≥ 0, not {hours}"
        )));
    }
    config.scavenge.interval =
        Some(Duration::from_secs_f64(hours * 3600.0)).filter(|d| !d.is_zero());
    let rate = args.scavenge_max_mb_per_s;
    if !(rate.is_finite() && rate >= 0.0) {
        return Err(crate::error::Error::Usage(format!(
            "--scavenge-max-mb-per-s must be ≥ 0, not {rate}"
        )));
    }
    config.scavenge.max_bytes_per_s =
        Some((rate * f64::from(1u32 << 20)) as u64).filter(|&r| r > 0);
    Ok(config)
}

/// A progress bar on stderr while the store rebuilds a missing or damaged index file.
fn rebuild_progress() -> strata_store::RebuildProgress {
    let bar: Arc<Mutex<Option<ProgressBar>>> = Arc::new(Mutex::new(None));
    Arc::new(move |segment, done, total| {
        let Ok(mut slot) = bar.lock() else { return };
        let pb = slot.get_or_insert_with(|| {
            tracing::warn!(segment = %segment.display(), "rebuilding index file");
            let pb = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "rebuilding index {msg} [{bar:40}] {bytes}/{total_bytes} ({eta})",
            ) {
                pb.set_style(style.progress_chars("=> "));
            }
            pb.set_message(
                segment
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            pb
        });
        pb.set_length(total);
        pb.set_position(done);
        if done >= total {
            pb.finish_and_clear();
            *slot = None;
        }
    })
}

/// Installs the SIGTERM and SIGINT (Ctrl-C) handlers and returns a future that resolves on
/// either. Installed before the "listening on" line is printed, so that a signal sent as soon
/// as the address is known already means a clean shutdown.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => tracing::info!("Ctrl-C received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    fn serve_config(args: &[&str]) -> strata_server::Config {
        let cli = Cli::try_parse_from(["strata", "serve"].iter().chain(args)).unwrap();
        let Command::Serve(serve) = cli.command else {
            panic!("not serve")
        };
        super::config(&serve).unwrap()
    }

    #[test]
    fn connection_limits_come_from_the_flags() {
        use std::time::Duration;
        let defaults = serve_config(&[]);
        assert_eq!(
            defaults.connections,
            strata_server::ConnectionLimits::default()
        );
        assert_eq!(
            defaults.connections.header_read_timeout,
            Duration::from_secs(10)
        );
        assert_eq!(defaults.connections.idle_timeout, Duration::from_secs(60));
        assert_eq!(defaults.connections.max_connections, 10_000);
        let set = serve_config(&[
            "--header-read-timeout",
            "3",
            "--idle-timeout",
            "7",
            "--max-connections",
            "50",
        ]);
        assert_eq!(set.connections.header_read_timeout, Duration::from_secs(3));
        assert_eq!(set.connections.idle_timeout, Duration::from_secs(7));
        assert_eq!(set.connections.max_connections, 50);
        for bad in [
            ["--max-connections", "0"],
            ["--idle-timeout", "0"],
            ["--header-read-timeout", "-1"],
        ] {
            assert!(
                Cli::try_parse_from(["strata", "serve"].iter().chain(&bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn tls_needs_both_the_certificate_and_the_key() {
        assert_eq!(serve_config(&[]).tls, None);
        let tls = serve_config(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).tls;
        assert_eq!(tls, Some(strata_server::TlsFiles::new("c.pem", "k.pem")));
        for half in [["--tls-cert", "c.pem"], ["--tls-key", "k.pem"]] {
            let e = Cli::try_parse_from(["strata", "serve"].iter().chain(&half))
                .err()
                .unwrap_or_else(|| panic!("{half:?} alone was accepted"));
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::MissingRequiredArgument,
                "{half:?}: {e}"
            );
            let other = if half[0] == "--tls-cert" {
                "--tls-key"
            } else {
                "--tls-cert"
            };
            assert!(e.to_string().contains(other), "{half:?}: {e}");
        }
    }

    #[test]
    fn projection_sandbox_limits_come_from_the_flags() {
        let defaults = serve_config(&[]);
        assert_eq!(defaults.projections.js_limits.memory_bytes, 64 << 20);
        assert_eq!(
            defaults.projections.js_limits.per_event,
            std::time::Duration::from_millis(250)
        );
        let set = serve_config(&[
            "--projection-memory-mb",
            "8",
            "--projection-event-timeout-ms",
            "40",
        ]);
        assert_eq!(set.projections.js_limits.memory_bytes, 8 << 20);
        assert_eq!(
            set.projections.js_limits.per_event,
            std::time::Duration::from_millis(40)
        );
        assert!(Cli::try_parse_from(["strata", "serve", "--projection-memory-mb", "0"]).is_err());
    }
}
