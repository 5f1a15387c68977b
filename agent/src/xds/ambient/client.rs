//! The ambient-mode client: one delta ADS stream to istiod
//! (`DeltaAggregatedResources`) subscribed to `istio.workload.Address`, as
//! ztunnel's. Each response is checked ([`super::delta`]), translated,
//! handed to the control loop to apply, and only then ACKed. The resources
//! are kept across streams (and offered back on reconnect); a stream that
//! fails is reopened with the SotW client's backoff, and until the new
//! stream answers, the last mesh applied keeps routing.
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use super::{delta::DeltaState, translate::translate};
use crate::{
    model::ProbeSettings,
    xds::ads::{
        SharedStatus, Streams, Update, describe_status, open, opened, reconnecting, requests,
        settings::AdsSettings, with_status,
    },
};

/// Runs until `stop` turns true.
pub async fn run(
    settings: AdsSettings,
    updates: mpsc::Sender<Update>,
    status: SharedStatus,
    stop: watch::Receiver<bool>,
) {
    let mut client = Delta {
        settings: &settings,
        updates: &updates,
        status: &status,
        state: DeltaState::new(),
    };
    reconnecting(&settings, &status, stop, &mut client).await;
}

struct Delta<'s> {
    settings: &'s AdsSettings,
    updates: &'s mpsc::Sender<Update>,
    status: &'s SharedStatus,
    /// What is in force, kept across streams.
    state: DeltaState,
}

impl Streams for Delta<'_> {
    async fn stream(&mut self) -> Result<(), String> {
        self.run().await
    }
}

impl Delta<'_> {
    async fn run(&mut self) -> Result<(), String> {
        let mut client = open(self.settings).await?;
        let mut first = self.state.initial_request();
        first.node = Some(self.settings.node.to_node());
        let (tx, request) = requests(self.settings, vec![first])?;
        let mut responses = client
            .delta_aggregated_resources(request)
            .await
            .map_err(|s| describe_status(&s))?
            .into_inner();
        opened(self.status);
        info!(server = %self.settings.url, node = %self.settings.node.id, "delta xDS stream open (ambient: istio.workload.Address)");
        let mut applied_this_stream = false;
        while let Some(response) = responses.message().await.map_err(|s| describe_status(&s))? {
            let handled = self.state.handle(&response);
            let mut request = handled.request;
            if !handled.errors.is_empty() {
                let what: Vec<String> = handled.errors.iter().map(ToString::to_string).collect();
                warn!(
                    type_url = %response.type_url,
                    "NACK: {}; the previous version of each refused resource stays in force",
                    what.join("; ")
                );
            }
            if handled.addresses && (handled.changed || !applied_this_stream) {
                match self.apply().await {
                    Ok(()) => applied_this_stream = true,
                    Err(e) => {
                        warn!("ambient update not applied: {e}");
                        // The ACK becomes a NACK: the kernel does not route by it.
                        request = self
                            .state
                            .refuse_applied(handled.before, &response.nonce, e);
                    }
                }
            }
            let nack = request.error_detail.as_ref().map(|d| d.message.clone());
            with_status(self.status, |s| {
                let st = &mut s.stream;
                st.responses += 1;
                match nack {
                    Some(m) => {
                        st.nacks += 1;
                        st.last_nack = Some(m);
                    }
                    None => st.acks += 1,
                }
                st.synced = self.state.synced();
                st.resources = self.state.resources.len() as u64;
                st.versions = [("address".to_string(), self.state.system_version.clone())]
                    .into_iter()
                    .collect();
            });
            tx.send(request)
                .await
                .map_err(|_| "the request stream closed".to_string())?;
        }
        Ok(())
    }

    /// Translates the resources in force and waits for the control loop to
    /// apply them.
    async fn apply(&mut self) -> Result<(), String> {
        let (mesh, report) = translate(&self.state.resources, ProbeSettings::default());
        let (applied, outcome) = oneshot::channel();
        self.updates
            .send(Update {
                mesh,
                report,
                applied,
            })
            .await
            .map_err(|_| "the agent is shutting down".to_string())?;
        outcome
            .await
            .map_err(|_| "the agent is shutting down".to_string())?
    }
}
