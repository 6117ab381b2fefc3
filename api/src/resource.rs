//! One resource as users write it and the API returns it, and its conversion
//! from and to Kuma Universal JSON/YAML.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::{ParseError, ValidationError};
use crate::spec::{Spec, Tags};
use crate::types::{ResourceKey, ResourceType};

/// What the store adds to a resource: times and a version that grows by one on
/// each write. A resource that was never stored has `Meta::default()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub creation_time: OffsetDateTime,
    pub modification_time: OffsetDateTime,
    pub version: u64,
}

impl Default for Meta {
    fn default() -> Self {
        Self {
            creation_time: OffsetDateTime::UNIX_EPOCH,
            modification_time: OffsetDateTime::UNIX_EPOCH,
            version: 0,
        }
    }
}

/// One resource: identity, labels, spec and store metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub name: String,
    /// Set for mesh-scoped types, `None` otherwise.
    pub mesh: Option<String>,
    pub labels: Tags,
    pub spec: Spec,
    pub meta: Meta,
}

/// Fields that are not part of any spec.
const META_FIELDS: [&str; 6] = [
    "type",
    "name",
    "mesh",
    "labels",
    "creationTime",
    "modificationTime",
];

impl Resource {
    pub fn new(name: impl Into<String>, mesh: Option<&str>, spec: Spec) -> Self {
        Self {
            name: name.into(),
            mesh: mesh.map(str::to_owned),
            labels: Tags::new(),
            spec,
            meta: Meta::default(),
        }
    }

    pub fn ty(&self) -> ResourceType {
        match self.spec {
            Spec::Mesh(_) => ResourceType::Mesh,
            Spec::TrafficPermission(_) => ResourceType::TrafficPermission,
            Spec::Dataplane(_) => ResourceType::Dataplane,
            Spec::ZoneIngress(_) => ResourceType::ZoneIngress,
            Spec::Zone(_) => ResourceType::Zone,
            Spec::MeshCaRequest(_) => ResourceType::MeshCaRequest,
            Spec::ZoneIntermediate(_) => ResourceType::ZoneIntermediate,
            Spec::DataplaneTokenKey(_) => ResourceType::DataplaneTokenKey,
            Spec::DataplaneInsight(_) => ResourceType::DataplaneInsight,
        }
    }

    pub fn key(&self) -> ResourceKey {
        ResourceKey::new(self.ty(), self.mesh.as_deref(), &self.name)
    }

    /// Parses a JSON value (from JSON or YAML text) in Kuma Universal shape.
    ///
    /// This checks structure and field types only; [`Resource::validate`] applies
    /// the rules. `creationTime` and `modificationTime` are read when present.
    pub fn from_value(value: Value) -> Result<Resource, ValidationError> {
        let Value::Object(mut obj) = value else {
            return Err(ValidationError::single(
                "",
                "a resource must be an object with a type and a name",
            ));
        };
        let mut errors = ValidationError::default();
        let ty = match obj.get("type") {
            Some(Value::String(t)) => match ResourceType::from_name(t) {
                Some(ty) => Some(ty),
                None => {
                    let known: Vec<_> = ResourceType::ALL.iter().map(|t| t.name()).collect();
                    errors.add(
                        "type",
                        format!("unknown type {t:?}, expected one of {}", known.join(", ")),
                    );
                    None
                }
            },
            Some(_) => {
                errors.add("type", "must be a string");
                None
            }
            None => {
                errors.add("type", "must be set");
                None
            }
        };
        let name = string_field(&obj, "name", &mut errors).unwrap_or_default();
        let mesh = string_field(&obj, "mesh", &mut errors);
        let labels = match obj.get("labels") {
            None | Some(Value::Null) => Tags::new(),
            Some(v) => match serde_json::from_value::<Tags>(v.clone()) {
                Ok(t) => t,
                Err(_) => {
                    errors.add("labels", "must be a map of strings to strings");
                    Tags::new()
                }
            },
        };
        let mut meta = Meta::default();
        if let Some(t) = time_field(&obj, "creationTime", &mut errors) {
            meta.creation_time = t;
        }
        if let Some(t) = time_field(&obj, "modificationTime", &mut errors) {
            meta.modification_time = t;
        }
        for f in META_FIELDS {
            obj.remove(f);
        }
        let Some(ty) = ty else {
            return Err(errors);
        };
        let rest = Value::Object(obj);
        let spec = match ty {
            ResourceType::Mesh => spec_from(rest, &mut errors).map(Spec::Mesh),
            ResourceType::TrafficPermission => {
                spec_from(rest, &mut errors).map(Spec::TrafficPermission)
            }
            ResourceType::Dataplane => spec_from(rest, &mut errors).map(Spec::Dataplane),
            ResourceType::ZoneIngress => spec_from(rest, &mut errors).map(Spec::ZoneIngress),
            ResourceType::Zone => spec_from(rest, &mut errors).map(Spec::Zone),
            ResourceType::MeshCaRequest => spec_from(rest, &mut errors).map(Spec::MeshCaRequest),
            ResourceType::ZoneIntermediate => {
                spec_from(rest, &mut errors).map(Spec::ZoneIntermediate)
            }
            ResourceType::DataplaneTokenKey => {
                spec_from(rest, &mut errors).map(Spec::DataplaneTokenKey)
            }
            ResourceType::DataplaneInsight => {
                spec_from(rest, &mut errors).map(Spec::DataplaneInsight)
            }
        };
        errors.clone().into_result()?;
        let spec = spec.ok_or(errors)?;
        Ok(Resource {
            name,
            mesh: if ty.is_mesh_scoped() { mesh } else { None },
            labels,
            spec,
            meta,
        })
    }

    /// The resource as the API shows it: `type`, `mesh`, `name`, times, labels,
    /// then the spec fields inline.
    pub fn to_value(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("type".into(), Value::String(self.ty().name().into()));
        if let Some(mesh) = &self.mesh {
            obj.insert("mesh".into(), Value::String(mesh.clone()));
        }
        obj.insert("name".into(), Value::String(self.name.clone()));
        obj.insert(
            "creationTime".into(),
            Value::String(rfc3339(self.meta.creation_time)),
        );
        obj.insert(
            "modificationTime".into(),
            Value::String(rfc3339(self.meta.modification_time)),
        );
        if !self.labels.is_empty() {
            obj.insert(
                "labels".into(),
                serde_json::to_value(&self.labels).unwrap_or_default(),
            );
        }
        let spec = match &self.spec {
            Spec::Mesh(s) => to_object(s),
            Spec::TrafficPermission(s) => to_object(s),
            Spec::Dataplane(s) => to_object(s),
            Spec::ZoneIngress(s) => to_object(s),
            Spec::Zone(s) => to_object(s),
            Spec::MeshCaRequest(s) => to_object(s),
            Spec::ZoneIntermediate(s) => to_object(s),
            Spec::DataplaneTokenKey(s) => to_object(s),
            Spec::DataplaneInsight(s) => to_object(s),
        };
        obj.extend(spec);
        Value::Object(obj)
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn to_object<T: Serialize>(spec: &T) -> Map<String, Value> {
    match serde_json::to_value(spec) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

fn string_field(
    obj: &Map<String, Value>,
    field: &str,
    errors: &mut ValidationError,
) -> Option<String> {
    match obj.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.add(field, "must be a string");
            None
        }
    }
}

fn time_field(
    obj: &Map<String, Value>,
    field: &str,
    errors: &mut ValidationError,
) -> Option<OffsetDateTime> {
    let s = string_field(obj, field, errors)?;
    match OffsetDateTime::parse(&s, &Rfc3339) {
        Ok(t) => Some(t),
        Err(e) => {
            errors.add(field, format!("must be an RFC 3339 time: {e}"));
            None
        }
    }
}

/// Deserializes a spec, turning serde's message into a field-path violation.
fn spec_from<T: DeserializeOwned>(value: Value, errors: &mut ValidationError) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(spec) => Some(spec),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            // serde reports unknown fields at the parent path; name the field itself.
            // For an unknown field the path already ends with the field's name.
            let (field, reason) = match (unknown_field_name(&inner), path.as_str()) {
                (Some(name), ".") => (name.to_owned(), "unknown field".to_owned()),
                (Some(_), _) => (path, "unknown field".to_owned()),
                (None, ".") => (String::new(), inner),
                (None, _) => (path, inner),
            };
            errors.add(field, reason);
            None
        }
    }
}

fn unknown_field_name(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// Splits a multi-document YAML (or JSON) text into values, skipping empty
/// documents. The error carries the zero-based index of the broken document.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, ParseError> {
    let mut out = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = <Value as serde::Deserialize>::deserialize(doc).map_err(|e| ParseError {
            index,
            reason: e.to_string(),
        })?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}
