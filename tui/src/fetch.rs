//! Polls the agent on a thread of its own, so a slow or absent agent never
//! stalls the keyboard or the screen.
use std::{
    io,
    sync::mpsc::{self, Receiver},
    thread,
    time::Duration,
};

use kmesh_api::{
    client::{AdminClient, ClientError},
    v1::{Connection, MAX_PAGE, RECENT_CONNECTIONS, Snapshot},
};
use tokio::time::MissedTickBehavior;

/// What one round of polling brought back. Whatever arrived is used even
/// when part of the round failed.
#[derive(Debug, Default)]
pub struct Poll {
    pub snapshot: Option<Snapshot>,
    /// Closed connections since the previous round, oldest first.
    pub records: Vec<Connection>,
    /// Records the agent had already discarded before we asked for them.
    pub missed: u64,
    /// Why the round failed, written for the operator.
    pub error: Option<String>,
}

pub struct Poller {
    client: AdminClient,
    /// The connections cursor: the last sequence number received.
    after: u64,
    /// Uptime in the last snapshot; a smaller one means the agent restarted
    /// and its sequence numbers started over.
    uptime: f64,
    /// The first page is the agent's backlog, not something we missed.
    caught_up: bool,
}

impl Poller {
    pub fn new(client: AdminClient) -> Self {
        Self {
            client,
            after: 0,
            uptime: 0.0,
            caught_up: false,
        }
    }

    pub async fn poll(&mut self) -> Poll {
        let snapshot = match self.client.snapshot().await {
            Ok(snapshot) => snapshot,
            Err(e) => return failed(e),
        };
        if snapshot.uptime_seconds < self.uptime {
            self.after = 0;
            self.caught_up = false;
        }
        self.uptime = snapshot.uptime_seconds;
        let mut poll = Poll {
            snapshot: Some(snapshot),
            ..Poll::default()
        };
        if let Err(e) = self.connections(&mut poll).await {
            poll.error = Some(e.to_string());
        }
        poll
    }

    /// Pages until the agent has nothing newer, at most its whole buffer.
    async fn connections(&mut self, poll: &mut Poll) -> Result<(), ClientError> {
        for _ in 0..RECENT_CONNECTIONS.div_ceil(MAX_PAGE) {
            let page = self.client.connections(self.after, MAX_PAGE).await?;
            if self.caught_up {
                poll.missed += page.missed;
            }
            let more = page.records.len() >= MAX_PAGE;
            self.after = page.next_after;
            poll.records.extend(page.records);
            if !more {
                break;
            }
        }
        self.caught_up = true;
        Ok(())
    }
}

fn failed(e: ClientError) -> Poll {
    Poll {
        error: Some(e.to_string()),
        ..Poll::default()
    }
}

/// Polls every `interval` (start to start) from now on; the first round
/// arrives at once. The thread ends when the receiver is dropped.
pub fn spawn(mut poller: Poller, interval: Duration) -> io::Result<Receiver<Poll>> {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("kmesh-top-fetch".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let error = Some(format!("cannot start the polling runtime: {e}"));
                    let _ = tx.send(Poll {
                        error,
                        ..Poll::default()
                    });
                    return;
                }
            };
            runtime.block_on(async {
                let mut ticks = tokio::time::interval(interval);
                ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    if tx.send(poller.poll().await).is_err() {
                        return;
                    }
                }
            });
        })?;
    Ok(rx)
}
