use std::fmt;

/// The closed set of resource kinds the control plane knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Mesh,
    TrafficPermission,
    Dataplane,
    ZoneIngress,
    Zone,
    MeshCaRequest,
    ZoneIntermediate,
    DataplaneTokenKey,
    DataplaneInsight,
}

impl ResourceType {
    pub const ALL: [ResourceType; 9] = [
        ResourceType::Mesh,
        ResourceType::TrafficPermission,
        ResourceType::Dataplane,
        ResourceType::ZoneIngress,
        ResourceType::Zone,
        ResourceType::MeshCaRequest,
        ResourceType::ZoneIntermediate,
        ResourceType::DataplaneTokenKey,
        ResourceType::DataplaneInsight,
    ];

    /// The `type` field value, as Kuma writes it.
    pub fn name(self) -> &'static str {
        match self {
            ResourceType::Mesh => "Mesh",
            ResourceType::TrafficPermission => "TrafficPermission",
            ResourceType::Dataplane => "Dataplane",
            ResourceType::ZoneIngress => "ZoneIngress",
            ResourceType::Zone => "Zone",
            ResourceType::MeshCaRequest => "MeshCaRequest",
            ResourceType::ZoneIntermediate => "ZoneIntermediate",
            ResourceType::DataplaneTokenKey => "DataplaneTokenKey",
            ResourceType::DataplaneInsight => "DataplaneInsight",
        }
    }

    /// The plural used in REST paths and CLI verbs (`traffic-permissions`).
    pub fn plural(self) -> &'static str {
        match self {
            ResourceType::Mesh => "meshes",
            ResourceType::TrafficPermission => "traffic-permissions",
            ResourceType::Dataplane => "dataplanes",
            ResourceType::ZoneIngress => "zone-ingresses",
            ResourceType::Zone => "zones",
            ResourceType::MeshCaRequest => "mesh-ca-requests",
            ResourceType::ZoneIntermediate => "zone-intermediates",
            ResourceType::DataplaneTokenKey => "dataplane-token-keys",
            ResourceType::DataplaneInsight => "dataplane-insights",
        }
    }

    /// The singular used in CLI verbs (`traffic-permission`).
    pub fn singular(self) -> &'static str {
        match self {
            ResourceType::Mesh => "mesh",
            ResourceType::TrafficPermission => "traffic-permission",
            ResourceType::Dataplane => "dataplane",
            ResourceType::ZoneIngress => "zone-ingress",
            ResourceType::Zone => "zone",
            ResourceType::MeshCaRequest => "mesh-ca-request",
            ResourceType::ZoneIntermediate => "zone-intermediate",
            ResourceType::DataplaneTokenKey => "dataplane-token-key",
            ResourceType::DataplaneInsight => "dataplane-insight",
        }
    }

    /// Whether resources of this type live inside a mesh.
    pub fn is_mesh_scoped(self) -> bool {
        matches!(
            self,
            ResourceType::TrafficPermission
                | ResourceType::Dataplane
                | ResourceType::MeshCaRequest
                | ResourceType::ZoneIntermediate
                | ResourceType::DataplaneInsight
        )
    }

    /// Whether only the control planes write this type (read-only on the
    /// REST API).
    pub fn is_system(self) -> bool {
        matches!(
            self,
            ResourceType::MeshCaRequest
                | ResourceType::ZoneIntermediate
                | ResourceType::DataplaneTokenKey
                | ResourceType::DataplaneInsight
        )
    }

    /// Parses the `type` field value.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Parses a CLI word: singular, plural or the type name, case-insensitive.
    pub fn from_cli_word(word: &str) -> Option<Self> {
        let w = word.to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|t| t.plural() == w || t.singular() == w || t.name().to_ascii_lowercase() == w)
    }

    /// A stable short tag used in storage keys.
    pub fn storage_tag(self) -> &'static str {
        match self {
            ResourceType::Mesh => "mesh",
            ResourceType::TrafficPermission => "tp",
            ResourceType::Dataplane => "dp",
            ResourceType::ZoneIngress => "zi",
            ResourceType::Zone => "zone",
            ResourceType::MeshCaRequest => "mcr",
            ResourceType::ZoneIntermediate => "zint",
            ResourceType::DataplaneTokenKey => "dtk",
            ResourceType::DataplaneInsight => "dpi",
        }
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Identifies one resource: its type, mesh (for mesh-scoped types) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    pub ty: ResourceType,
    pub mesh: Option<String>,
    pub name: String,
}

impl ResourceKey {
    pub fn new(ty: ResourceType, mesh: Option<&str>, name: &str) -> Self {
        Self {
            ty,
            mesh: mesh.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    pub fn global(ty: ResourceType, name: &str) -> Self {
        Self::new(ty, None, name)
    }

    pub fn scoped(ty: ResourceType, mesh: &str, name: &str) -> Self {
        Self::new(ty, Some(mesh), name)
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.mesh {
            Some(m) => write!(f, "{} {}/{}", self.ty, m, self.name),
            None => write!(f, "{} {}", self.ty, self.name),
        }
    }
}
