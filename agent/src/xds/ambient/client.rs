//! The ambient-mode client: one delta ADS stream to istiod
//! (`DeltaAggregatedResources`) subscribed to `istio.workload.Address`, as
//! ztunnel's, run by the delta client both modes share
//! ([`crate::xds::ads::delta_client`]). Each response's resources are
//! translated whole: the translation of workloads and services is cheap
//! next to the Envoy one.
use tokio::sync::{mpsc, watch};

use super::{
    AddressSet,
    delta::{DeltaState, new_state},
    translate::translate,
};
use crate::{
    model::{Mesh, ProbeSettings},
    xds::{
        Report,
        ads::{
            SharedStatus, Update,
            delta::{DeltaStore, Handled},
            delta_client::{self, DeltaMode},
            settings::AdsSettings,
        },
    },
};

/// Runs until `stop` turns true.
pub async fn run(
    settings: AdsSettings,
    updates: mpsc::Sender<Update>,
    status: SharedStatus,
    stop: watch::Receiver<bool>,
) {
    let state: DeltaState = new_state();
    delta_client::run(settings, updates, status, stop, state, Ambient).await;
}

struct Ambient;

impl DeltaMode for Ambient {
    type Store = AddressSet;
    const WHAT: &'static str = "ambient: istio.workload.Address";

    fn changed(&mut self, _: &Handled<<AddressSet as DeltaStore>::Entry>) {}

    fn mesh(&mut self, store: &AddressSet) -> (Mesh, Report) {
        translate(store, ProbeSettings::default())
    }

    fn applied(&mut self, _: bool) {}

    fn count(store: &AddressSet) -> u64 {
        store.len() as u64
    }
}
