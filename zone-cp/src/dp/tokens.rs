//! Dataplane tokens: who may register which Dataplane and open its xDS
//! stream. A token names a mesh and the tags (e.g. `kuma.io/service=web`)
//! its holder may claim; a Dataplane whose inbounds carry other values is
//! refused and never gets a certificate.

use std::sync::{Arc, RwLock};

use api::{Resource, ResourceKey, Spec};
use certs::{DataplaneTokenClaims, SigningKey, VerifyingKey};
use store::Store;

use crate::now_unix;

#[derive(Clone)]
pub struct DataplaneAuth {
    store: Store,
    signing_key: Arc<SigningKey>,
    keys: Arc<RwLock<Vec<VerifyingKey>>>,
    /// Tokens come from the global, whose keys arrive over KDS.
    federated: bool,
}

impl DataplaneAuth {
    /// `signing_key` is this zone's own (for standalone zones, which issue
    /// their tokens); the global's come from the store.
    pub fn new(store: Store, signing_key: SigningKey) -> Self {
        let keys = vec![signing_key.verifying_key()];
        Self {
            store,
            signing_key: Arc::new(signing_key),
            keys: Arc::new(RwLock::new(keys)),
            federated: false,
        }
    }

    /// Marks this zone as federated: the global issues its tokens.
    pub fn federated(mut self, federated: bool) -> Self {
        self.federated = federated;
        self
    }

    /// Whether a federated zone has not received the global's token keys
    /// yet (just started, or never connected): a refusal now may be only
    /// "not yet", and the caller should retry.
    pub fn awaiting_global_keys(&self) -> bool {
        self.federated && self.store.count(api::ResourceType::DataplaneTokenKey) == 0
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.signing_key
    }

    /// This zone's keys and the global's (`DataplaneTokenKey` resources,
    /// synced over KDS).
    fn keys(&self) -> Vec<VerifyingKey> {
        let mut keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        match self.store.list(api::ResourceType::DataplaneTokenKey, None) {
            Ok(list) => keys.extend(list.iter().filter_map(|r| match &r.spec {
                Spec::DataplaneTokenKey(k) => VerifyingKey::from_base64(&k.public_key).ok(),
                _ => None,
            })),
            Err(e) => tracing::warn!(error = %e, "cannot read the global's token keys"),
        }
        keys
    }

    pub fn verify(&self, token: &str) -> Result<DataplaneTokenClaims, String> {
        let keys = self.keys();
        certs::verify_dataplane_token(&keys, token.trim(), now_unix())
            .map_err(|e| format!("the dataplane token was refused: {e}"))
    }

    /// Whether `token` lets a ZoneIngress register in `zone`: a zone token
    /// of the global with the `ingress` scope, bound to this zone (Kuma's
    /// `meshctl generate zone-token --scope ingress`).
    pub fn check_ingress(&self, zone: &str, token: &str) -> Result<(), String> {
        let claims = certs::verify_zone_token(&self.keys(), token.trim(), now_unix())
            .map_err(|e| format!("the zone ingress token was refused: {e}"))?;
        if claims.scope != certs::ZoneTokenScope::Ingress {
            return Err(
                "the token is a zone token without the ingress scope; generate one with --scope ingress"
                    .into(),
            );
        }
        if claims.zone != zone {
            return Err(format!(
                "the token is for zone {:?}, but this is zone {zone:?}",
                claims.zone
            ));
        }
        Ok(())
    }

    /// Whether `token` lets `dp` register.
    pub fn check_registration(&self, dp: &Resource, token: &str) -> Result<(), String> {
        let claims = self.verify(token)?;
        allows(&claims, dp)
    }

    /// Whether `token` lets the proxy of `key` (already registered) stream.
    pub fn check_stream(&self, key: &ResourceKey, token: Option<&str>) -> Result<(), String> {
        let token = token.ok_or("no dataplane token on the xDS stream (authorization metadata)")?;
        if key.ty == api::ResourceType::ZoneIngress {
            let zi = self
                .store
                .get(key)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{key} is not registered; POST /bootstrap first"))?;
            let zone = zi.labels.get(api::ZONE_TAG).cloned().unwrap_or_default();
            return self.check_ingress(&zone, token);
        }
        let claims = self.verify(token)?;
        let dp = self
            .store
            .get(key)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{key} is not registered; POST /bootstrap first"))?;
        allows(&claims, &dp)
    }
}

fn allows(claims: &DataplaneTokenClaims, dp: &Resource) -> Result<(), String> {
    let Spec::Dataplane(spec) = &dp.spec else {
        return Err("not a Dataplane".into());
    };
    let tags: Vec<_> = spec.networking.inbound.iter().map(|i| &i.tags).collect();
    claims.allows(dp.mesh.as_deref().unwrap_or_default(), &tags)
}
