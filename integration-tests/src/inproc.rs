//! Zones that run the real zone sync code (`zone_cp::kds_client`) inside
//! the test or benchmark process, each on its own temporary store: cheap
//! enough to run fifty, and their stores can be watched directly.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use kds::snapshot::SnapshotCache;
use store::Store;
use tokio_util::sync::CancellationToken;
use zone_cp::kds_client::{self, KdsClientConfig};

pub struct InProcessZone {
    pub name: String,
    pub store: Store,
    cancel: CancellationToken,
}

impl InProcessZone {
    /// Starts syncing zone `name` with the global's KDS at `kds` using
    /// `token`. `seed` resources are put in the zone's store first (those
    /// labelled `kuma.io/origin: zone` are published up).
    pub fn start(
        name: &str,
        kds: SocketAddr,
        token: &str,
        seed: Vec<api::Resource>,
    ) -> anyhow::Result<InProcessZone> {
        let store = Store::temporary()?;
        for r in seed {
            store.apply(vec![store::Op::Replicate(r)])?;
        }
        let claims = certs::read_zone_token_unverified(token).context("zone token")?;
        let cancel = CancellationToken::new();
        let snapshot = SnapshotCache::start(
            store.clone(),
            &api::kds::ZONE_TO_GLOBAL,
            // Unlike the real zone-cp, publish everything labelled as from
            // a zone, whatever zone it names: tests use this to play a
            // compromised zone the global must not believe.
            |r: &api::Resource| r.labels.get(api::ORIGIN_LABEL).map(String::as_str) == Some("zone"),
            cancel.clone(),
        )?;
        let cfg = KdsClientConfig {
            zone: name.to_owned(),
            global_address: format!("grpcs://127.0.0.1:{}", kds.port()),
            token: token.to_owned(),
            kds_ca_pem: claims.kds_ca,
            batch_bytes: 512 * 1024,
        };
        tokio::spawn(kds_client::run(
            cfg,
            store.clone(),
            snapshot,
            Arc::default(),
            cancel.clone(),
        ));
        Ok(InProcessZone {
            name: name.to_owned(),
            store,
            cancel,
        })
    }
}

impl Drop for InProcessZone {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
