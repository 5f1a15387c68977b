//! The delta ADS client (`DeltaAggregatedResources`), for both modes: one
//! stream at a time, its protocol kept by [`DeltaState`]. Each response is
//! checked, turned into a mesh by the mode ([`DeltaMode`]), handed to the
//! control loop to apply, and only then ACKed, so an ACK means the kernel
//! routes by it. The resources are kept across streams (and offered back
//! on reconnect as `initial_resource_versions`); a stream that fails is
//! reopened with the SotW client's backoff, and until the new stream
//! answers, the last mesh applied keeps routing.
use std::collections::BTreeSet;

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::{
    SharedStatus, Streams, Update,
    delta::{DeltaState, DeltaStore, Handled},
    describe_status, keep_pending, open, opened, reconnecting, requests, send_update,
    settings::AdsSettings,
    store::ENDPOINTS_URL,
    with_status,
};
use crate::{
    model::{Mesh, ProbeSettings},
    xds::{
        Report,
        resources::{ResourceSet, ResourceType},
        translate::{self, Translation, incremental},
    },
};

/// What differs between the modes: the resources and how they become a
/// mesh.
pub(crate) trait DeltaMode: Send {
    type Store: DeltaStore<Entry: Send> + Send;
    /// For the log: what the stream carries.
    const WHAT: &'static str;

    /// Takes note of what a response changed, applied now or later (a
    /// stream applies nothing until every type has answered).
    fn changed(&mut self, handled: &Handled<<Self::Store as DeltaStore>::Entry>);

    /// The mesh and report of what is in force.
    fn mesh(&mut self, store: &Self::Store) -> (Mesh, Report);

    /// The control loop applied the last mesh (`true`) or refused it.
    fn applied(&mut self, ok: bool);

    /// How many resources are in force, for the status.
    fn count(store: &Self::Store) -> u64;
}

/// Runs until `stop` turns true.
pub(crate) async fn run<M: DeltaMode>(
    settings: AdsSettings,
    updates: mpsc::Sender<Update>,
    status: SharedStatus,
    stop: watch::Receiver<bool>,
    state: DeltaState<M::Store>,
    mode: M,
) {
    let mut client = Client {
        settings: &settings,
        updates: &updates,
        status: &status,
        state,
        mode,
    };
    reconnecting(&settings, &status, stop, &mut client).await;
}

struct Client<'s, M: DeltaMode> {
    settings: &'s AdsSettings,
    updates: &'s mpsc::Sender<Update>,
    status: &'s SharedStatus,
    /// What is in force, kept across streams.
    state: DeltaState<M::Store>,
    mode: M,
}

impl<M: DeltaMode> Streams for Client<'_, M> {
    async fn stream(&mut self) -> Result<(), String> {
        self.run().await
    }
}

impl<M: DeltaMode> Client<'_, M> {
    async fn run(&mut self) -> Result<(), String> {
        let mut client = open(self.settings).await?;
        let (tx, request) = requests(self.settings, self.state.initial_requests())?;
        let mut responses = client
            .delta_aggregated_resources(request)
            .await
            .map_err(|s| describe_status(&s))?
            .into_inner();
        opened(self.status);
        info!(server = %self.settings.url, node = %self.settings.node.id, "delta xDS stream open ({})", M::WHAT);
        let mut applied_this_stream = false;
        while let Some(response) = responses.message().await.map_err(|s| describe_status(&s))? {
            let handled = self.state.handle(&response);
            self.mode.changed(&handled);
            if !handled.errors.is_empty() {
                let what: Vec<String> = handled.errors.iter().map(ToString::to_string).collect();
                warn!(
                    type_url = %response.type_url,
                    "NACK: {}; the previous version of each refused resource stays in force",
                    what.join("; ")
                );
            }
            let apply = handled.type_url.is_some()
                && self.state.synced()
                && (handled.changed() || !applied_this_stream);
            let mut requests = if apply {
                let (mesh, report) = self.mode.mesh(&self.state.resources);
                match send_update(self.updates, mesh, report).await {
                    Ok(()) => {
                        self.mode.applied(true);
                        applied_this_stream = true;
                        handled.requests
                    }
                    Err(e) => {
                        self.mode.applied(false);
                        warn!("xDS update not applied: {e}");
                        // The ACK becomes a NACK: the kernel does not route by it.
                        let mut requests = handled.requests;
                        let url = handled.type_url.unwrap_or_default();
                        requests[0] =
                            self.state
                                .refuse_applied(handled.undo, url, &response.nonce, e);
                        requests
                    }
                }
            } else {
                handled.requests
            };
            let nack = requests[0].error_detail.as_ref().map(|d| d.message.clone());
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
                st.resources = M::count(&self.state.resources);
                st.versions = self
                    .state
                    .system_versions()
                    .into_iter()
                    .map(|(url, v)| (short_name(url), v))
                    .collect();
            });
            for r in requests.drain(..) {
                tx.send(r)
                    .await
                    .map_err(|_| "the request stream closed".to_string())?;
            }
        }
        Ok(())
    }
}

/// `cluster`, `endpoints`, ... for an Envoy type; `address` for ambient's.
fn short_name(url: &str) -> String {
    match ResourceType::from_type_url(url) {
        Some(kind) => kind.as_str().to_string(),
        None => url.rsplit('.').next().unwrap_or(url).to_ascii_lowercase(),
    }
}

/// The sidecar mode: Envoy's resources, translated in proportion to what
/// changed (a response of endpoints only re-resolves the services that
/// read them, see [`incremental`]).
#[derive(Default)]
pub(crate) struct Sidecar {
    /// The translation of what is in force (or of the update being
    /// applied); `None` after an update the kernel refused, so the next one
    /// translates everything.
    translation: Option<Translation>,
    /// The mesh being applied, then the one applied: a service whose
    /// clusters or routes are still on their way keeps its form there.
    candidate: Option<Mesh>,
    last_applied: Option<Mesh>,
    /// What responses changed since the last translation.
    changed_endpoints: BTreeSet<String>,
    changed_other: bool,
}

impl DeltaMode for Sidecar {
    type Store = ResourceSet;
    const WHAT: &'static str = "sidecar: clusters, endpoints, listeners, routes";

    fn changed(&mut self, handled: &Handled<<ResourceSet as DeltaStore>::Entry>) {
        for u in &handled.undo {
            if u.type_url == ENDPOINTS_URL {
                self.changed_endpoints.insert(u.name.clone());
            } else {
                self.changed_other = true;
            }
        }
    }

    fn mesh(&mut self, store: &ResourceSet) -> (Mesh, Report) {
        let changed = std::mem::take(&mut self.changed_endpoints);
        let incremental = !std::mem::take(&mut self.changed_other)
            && self
                .translation
                .as_mut()
                .is_some_and(|t| incremental::update_endpoints(t, store, &changed).is_some());
        if !incremental {
            self.translation = Some(translate::translate(store));
        }
        let t = self.translation.as_ref().expect("translated above");
        let mut mesh = Mesh {
            services: t.services.clone(),
            workloads: translate::workloads::from_endpoints(store),
            probe: ProbeSettings::default(),
        };
        keep_pending(&mut mesh, &t.pending, self.last_applied.as_ref());
        let report = Report {
            rejected: store.rejected.clone(),
            findings: t.findings.clone(),
            unrouted: t.unrouted.clone(),
        };
        self.candidate = Some(mesh.clone());
        (mesh, report)
    }

    fn applied(&mut self, ok: bool) {
        let candidate = self.candidate.take();
        if ok {
            self.last_applied = candidate;
        } else {
            self.translation = None;
        }
    }

    fn count(store: &ResourceSet) -> u64 {
        ResourceType::ALL.iter().map(|&k| store.len(k) as u64).sum()
    }
}
