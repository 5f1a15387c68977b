//! kmesh-top: the command line, the terminal, and the loop between them.
use std::{
    io::Write,
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, TryRecvError},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use crossterm::event::{self, Event, KeyEventKind};
use kmesh_api::{client::AdminClient, v1::DEFAULT_SOCKET};
use kmesh_top::{
    app::{App, View},
    fetch::{self, Poll, Poller},
    hangup::Hangup,
    once,
    theme::Theme,
    ui,
};

/// How long the loop waits for a key before looking for new figures.
const INPUT_WAIT: Duration = Duration::from_millis(100);

const AFTER_HELP: &str = "\
Figures:
  Rates are the difference of two successive snapshots over the time between
  them. Connect-latency and RTT quantiles are over the same interval; a `*`
  marks a quantile since the agent started, shown when nothing connected in
  the interval. A backend's SHARE is its share of the service's new
  connections since kmesh-top started (in --once: over the one interval).

Feed (c): the newest 1000 closed connections, newest first, times in UTC.
  Space pauses the display; polling goes on and up to 1000 new records are
  held for when it resumes.

Calls (w): who calls whom, one row per client workload (namespace/workload,
  or unknown outside the mesh) and service it calls, over all the service's
  backends: NEW/s, connect and RTT p99 over the interval, ERR/s (failed
  connects, resets and timeouts) and the DESTINATIONS, the workloads that
  answered. REPORTER source: counted on the client's side; destination: only
  the server is on this node. n v p sort the calls by source, service and
  reporter. Workload names come from the mesh source (the mesh file's
  workloads:, or Istio); without them every peer is unknown.

--once prints three plain-text tables (agent, services, backends) from two
  snapshots --interval apart, so rates, quantiles and SHARE are over that
  interval; WANT is a backend's configured share. OPENED, CLOSED, FAILED
  (connections) and IN, OUT (bytes) are totals since the agent began
  counting the service or backend: they still tell what happened once the
  traffic has stopped and every rate is 0.
--once --calls prints the calls table alone, with the same columns and
  DESTINATIONS last (comma-separated).
--once --json prints one snapshot at once, as pretty-printed JSON
  (`jq -c` for one line).

Keys: press ? in the dashboard. NO_COLOR=1 turns colours off.";

/// A live terminal dashboard of what kmesh-agent routes: per-service and
/// per-backend rates and latencies, closed connections as they happen, and
/// the agent's own health.
#[derive(Parser, Debug)]
#[command(version, after_help = AFTER_HELP)]
struct Cli {
    /// The agent's admin socket: the path given to `kmesh-agent run --admin-socket`.
    #[arg(
        long,
        visible_alias = "socket",
        env = "KMESH_ADMIN_SOCKET",
        default_value = DEFAULT_SOCKET
    )]
    admin_socket: PathBuf,
    /// Time between refreshes, e.g. 500ms, 2s.
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    interval: Duration,
    /// Print the figures once, for scripts, and exit.
    #[arg(long)]
    once: bool,
    /// With --once: print the snapshot as JSON.
    #[arg(long, requires = "once")]
    json: bool,
    /// Who calls whom: start on the calls view; with --once print only its table.
    #[arg(long, conflicts_with = "json")]
    calls: bool,
    /// Leave the dashboard by itself after this long (demos, recordings), e.g. 30s.
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "once")]
    exit_after: Option<Duration>,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if interval < Duration::from_millis(100) {
        return Err("must be at least 100ms".into());
    }
    Ok(interval)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = if cli.once {
        print_once(&cli)
    } else {
        dashboard(&cli)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!, which panics when standard error is the
            // terminal that went away.
            let _ = writeln!(std::io::stderr(), "kmesh-top: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_once(cli: &Cli) -> anyhow::Result<()> {
    let client = AdminClient::new(&cli.admin_socket);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the I/O runtime")?;
    runtime.block_on(async {
        let first = client.snapshot().await?;
        if cli.json {
            println!("{}", serde_json::to_string_pretty(&first)?);
            return Ok(());
        }
        tokio::time::sleep(cli.interval).await;
        let second = client.snapshot().await?;
        match cli.calls {
            true => print!("{}", once::calls_text(&first, &second)),
            false => print!("{}", once::text(&first, &second)),
        }
        Ok(())
    })
}

fn dashboard(cli: &Cli) -> anyhow::Result<()> {
    let updates = fetch::spawn(
        Poller::new(AdminClient::new(&cli.admin_socket)),
        cli.interval,
    )
    .context("starting the polling thread")?;
    // Fail on the plain terminal, before the alternate screen hides why.
    let first = updates.recv().context("the polling thread stopped")?;
    if first.snapshot.is_none() {
        bail!(
            "{}",
            first
                .error
                .unwrap_or_else(|| "no snapshot from the agent".into())
        );
    }
    let mut app = App::new(Theme::from_env(), cli.interval);
    if cli.calls {
        app.view = View::Calls;
    }
    app.on_poll(first);
    let hangup = Hangup::watch_keyboard()
        .context("no terminal to read keys from; --once prints without one")?;
    // Before raw mode: a SIGTERM or SIGINT must restore the terminal too
    // (Ctrl-C arrives as a key in raw mode). SIGHUP keeps its default
    // action, ending the process at once: the terminal is gone, so there is
    // nothing to restore.
    let signalled = watch_signals().context("installing signal handlers")?;
    let deadline = cli.exit_after.map(|d| Instant::now() + d);
    // Also installs a panic hook that restores the terminal first.
    let mut terminal = match ratatui::try_init() {
        Ok(terminal) => terminal,
        Err(e) => {
            // Only undo what was done: without a terminal there is nothing.
            if crossterm::terminal::is_raw_mode_enabled().unwrap_or(false) {
                let _ = ratatui::try_restore();
            }
            bail!("cannot take over the terminal ({e}); --once prints without one");
        }
    };
    let stop = || {
        signalled.load(Ordering::Relaxed)
            || deadline.is_some_and(|d| Instant::now() >= d)
            || hangup.happened()
    };
    let result = run(&mut terminal, &mut app, &updates, stop);
    // Whatever ended the loop (a failed draw, say), a terminal that hung
    // up has nothing to restore.
    if hangup.happened() {
        bail!("the terminal went away");
    }
    // Before main prints the error, so it lands on the normal screen.
    ratatui::restore();
    result
}

/// Sets the returned flag on SIGTERM or SIGINT.
fn watch_signals() -> anyhow::Result<Arc<AtomicBool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let flag = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Installed here, so no signal is missed once this returns.
    let mut signals = runtime.block_on(async {
        Ok::<_, std::io::Error>([
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        ])
    })?;
    let set = flag.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async {
                let [term, int] = &mut signals;
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            });
            set.store(true, Ordering::Relaxed);
        })?;
    Ok(flag)
}

fn run(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    updates: &Receiver<Poll>,
    stop: impl Fn() -> bool,
) -> anyhow::Result<()> {
    let mut redraw = true;
    while !app.quit && !stop() {
        if redraw {
            terminal.draw(|frame| ui::draw(frame, app))?;
            redraw = false;
        }
        // Returns by INPUT_WAIT even on a terminal that hung up (crossterm's
        // poll(2) source, see Cargo.toml), so `stop` is asked again.
        if event::poll(INPUT_WAIT)? {
            match event::read()? {
                Event::Key(key) if key.kind != KeyEventKind::Release => app.on_key(key),
                Event::Resize(..) => {}
                _ => continue,
            }
            redraw = true;
        }
        loop {
            match updates.try_recv() {
                Ok(poll) => {
                    app.on_poll(poll);
                    redraw = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => bail!("the polling thread stopped"),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn intervals_are_humantime_and_not_too_short() {
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_interval("10ms").is_err());
        assert!(parse_interval("soon").is_err());
    }

    #[test]
    fn json_needs_once_and_the_interval_defaults_to_a_second() {
        Cli::command().debug_assert();
        assert!(Cli::try_parse_from(["kmesh-top", "--json"]).is_err());
        let cli = Cli::try_parse_from(["kmesh-top", "--once", "--json"]).expect("valid flags");
        assert!(cli.once && cli.json);
        assert_eq!(cli.interval, Duration::from_secs(1));
    }

    #[test]
    fn calls_goes_with_once_or_the_dashboard_but_not_json() {
        for args in [
            &["kmesh-top", "--calls"][..],
            &["kmesh-top", "--once", "--calls"],
        ] {
            let cli = Cli::try_parse_from(args).expect("valid flags");
            assert!(cli.calls, "{args:?}");
        }
        assert!(Cli::try_parse_from(["kmesh-top", "--once", "--json", "--calls"]).is_err());
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.contains("--once --calls prints the calls table"),
            "{help}"
        );
    }

    #[test]
    fn the_socket_flag_is_the_agents_name_and_the_old_one_still_works() {
        for flag in ["--admin-socket", "--socket"] {
            let cli = Cli::try_parse_from(["kmesh-top", flag, "/run/a.sock"]).expect(flag);
            assert_eq!(cli.admin_socket, PathBuf::from("/run/a.sock"), "{flag}");
        }
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("--admin-socket <ADMIN_SOCKET>"), "{help}");
        assert!(help.contains("--socket"), "the old name is shown: {help}");
    }
}
