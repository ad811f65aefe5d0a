//! The signals that stop sdl: SIGTERM, SIGINT and SIGHUP (sdl does not reload its configuration).
//!
//! Guarantee: no signal falls in a gap. The handlers are installed before anything can hang;
//! during start-up a signal is logged and ends the process at once (exit 0: nothing runs yet that
//! needs stopping, and every WAL write is flushed when made); once the stages run, the same signal
//! streams are handed to the running service, which stops both stages cleanly on the first signal
//! and exits at once on a second.

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::warn;

/// The signals that stop sdl.
pub(super) struct Signals {
    pub sigterm: Signal,
    pub sigint: Signal,
    pub sighup: Signal,
}

/// The start-up signal watcher (see [`watch_during_startup`]): `done` ends start-up, `signals`
/// hands the signal streams back for the running service.
pub(super) struct StartupSignals {
    done: oneshot::Sender<()>,
    signals: JoinHandle<Signals>,
}

impl StartupSignals {
    /// Start-up is over: from now on the running service answers the signals.
    pub(super) async fn hand_over(self) -> anyhow::Result<Signals> {
        let _ = self.done.send(());
        self.signals
            .await
            .map_err(|e| anyhow::anyhow!("signal task failed: {e}"))
    }
}

/// Until start-up is handed over, a stop signal logs why and ends the process (exit 0): start-up
/// holds nothing that needs a clean stop. After it, the task hands the signal streams back (no
/// signal falls in a gap between two handlers).
pub(super) fn watch_during_startup() -> anyhow::Result<StartupSignals> {
    let mut signals = Signals {
        sigterm: signal(SignalKind::terminate())?,
        sigint: signal(SignalKind::interrupt())?,
        sighup: signal(SignalKind::hangup())?,
    };
    let (done_tx, mut done_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let name = tokio::select! {
            _ = &mut done_rx => return signals,
            _ = signals.sigterm.recv() => "SIGTERM",
            _ = signals.sigint.recv() => "SIGINT",
            _ = signals.sighup.recv() => "SIGHUP",
        };
        let message = format!(
            "{name} during start-up: stopping before relaying anything (nothing is lost: the WAL holds everything read so far)"
        );
        warn!(target: "sdl::service", "{message}");
        std::process::exit(0);
    });
    Ok(StartupSignals {
        done: done_tx,
        signals: task,
    })
}
