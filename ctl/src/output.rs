//! How resources are shown: tables per type, or YAML/JSON that `apply` takes back.

use api::ResourceType;
use comfy_table::presets::NOTHING;
use comfy_table::Table;
use serde_json::Value;

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `k=v` pairs of every selector's `match`, selectors separated by `; `.
fn selectors(v: &Value) -> String {
    v.as_array()
        .map(|sels| {
            sels.iter()
                .map(|sel| tags(&sel["match"]))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

fn tags(v: &Value) -> String {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", s(v)))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn table(header: Vec<&str>, rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(NOTHING).set_header(header);
    for r in rows {
        t.add_row(r);
    }
    t.to_string()
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A table of `items` of type `ty`.
pub fn resource_table(ty: ResourceType, items: &[Value]) -> String {
    let age = |i: &Value| s(&i["creationTime"]);
    match ty {
        ResourceType::Mesh => table(
            vec!["NAME", "MTLS", "CREATED"],
            items
                .iter()
                .map(|i| {
                    let mtls = i["mtls"]["enabledBackend"]
                        .as_str()
                        .unwrap_or("off")
                        .to_owned();
                    vec![s(&i["name"]), mtls, age(i)]
                })
                .collect(),
        ),
        ResourceType::TrafficPermission => table(
            vec!["MESH", "NAME", "SOURCES", "DESTINATIONS", "CREATED"],
            items
                .iter()
                .map(|i| {
                    vec![
                        s(&i["mesh"]),
                        s(&i["name"]),
                        selectors(&i["sources"]),
                        selectors(&i["destinations"]),
                        age(i),
                    ]
                })
                .collect(),
        ),
        ResourceType::Dataplane => table(
            vec!["MESH", "NAME", "ADDRESS", "SERVICES", "ZONE", "CREATED"],
            items
                .iter()
                .map(|i| {
                    let services = i["networking"]["inbound"]
                        .as_array()
                        .map(|ins| {
                            ins.iter()
                                .map(|inb| s(&inb["tags"]["kuma.io/service"]))
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default();
                    vec![
                        s(&i["mesh"]),
                        s(&i["name"]),
                        s(&i["networking"]["address"]),
                        services,
                        s(&i["labels"]["kuma.io/zone"]),
                        age(i),
                    ]
                })
                .collect(),
        ),
        ResourceType::ZoneIngress => table(
            vec![
                "NAME",
                "ZONE",
                "ADDRESS",
                "ADVERTISED",
                "SERVICES",
                "CREATED",
            ],
            items
                .iter()
                .map(|i| {
                    let n = &i["networking"];
                    let advertised = match n["advertisedAddress"].as_str() {
                        Some(a) => format!("{a}:{}", s(&n["advertisedPort"])),
                        None => String::new(),
                    };
                    let services = i["availableServices"].as_array().map_or(0, Vec::len);
                    vec![
                        s(&i["name"]),
                        s(&i["labels"]["kuma.io/zone"]),
                        format!("{}:{}", s(&n["address"]), s(&n["port"])),
                        advertised,
                        services.to_string(),
                        age(i),
                    ]
                })
                .collect(),
        ),
        ResourceType::Zone => table(
            vec!["NAME", "ENABLED", "CREATED"],
            items
                .iter()
                .map(|i| {
                    let enabled = i["enabled"].as_bool().unwrap_or(true);
                    vec![s(&i["name"]), enabled.to_string(), age(i)]
                })
                .collect(),
        ),
        ResourceType::DataplaneInsight => dataplanes_table(items),
        ResourceType::MeshCaRequest
        | ResourceType::ZoneIntermediate
        | ResourceType::DataplaneTokenKey => table(
            vec!["MESH", "NAME", "ZONE", "CREATED"],
            items
                .iter()
                .map(|i| {
                    vec![
                        s(&i["mesh"]),
                        s(&i["name"]),
                        s(&i["labels"]["kuma.io/zone"]),
                        age(i),
                    ]
                })
                .collect(),
        ),
    }
}

/// The zones table of `meshctl inspect zones` from `/zones+insights` items.
pub fn zones_table(items: &[Value]) -> String {
    table(
        vec![
            "NAME",
            "STATUS",
            "VERSION",
            "CONNECTED SINCE",
            "SENT",
            "ACKED",
            "NACKED",
            "LAST NACK",
        ],
        items
            .iter()
            .map(|i| {
                let ins = &i["zoneInsight"];
                let online = ins["online"].as_bool().unwrap_or(false);
                let (mut sent, mut acked, mut nacked) = (0, 0, 0);
                let mut last_nack = String::new();
                for dir in ["globalToZone", "zoneToGlobal"] {
                    if let Some(types) = ins[dir].as_object() {
                        for st in types.values() {
                            sent += st["resources"].as_u64().unwrap_or(0);
                            acked += st["acks"].as_u64().unwrap_or(0);
                            nacked += st["nacks"].as_u64().unwrap_or(0);
                            if let Some(n) = st["lastNack"].as_str() {
                                last_nack = n.to_owned();
                            }
                        }
                    }
                }
                vec![
                    s(&i["name"]),
                    if online { "Online" } else { "Offline" }.to_owned(),
                    s(&ins["version"]),
                    s(&ins["connectedSince"]),
                    sent.to_string(),
                    acked.to_string(),
                    nacked.to_string(),
                    last_nack,
                ]
            })
            .collect(),
    )
}

/// Multi-document YAML of `items`, re-appliable with `meshctl apply`.
pub fn yaml_documents(items: &[Value]) -> Result<String, serde_yaml::Error> {
    let docs: Result<Vec<String>, _> = items.iter().map(serde_yaml::to_string).collect();
    Ok(docs?.join("---\n"))
}

/// The dataplanes table of `meshctl inspect dataplanes`, from
/// DataplaneInsight items.
pub fn dataplanes_table(items: &[Value]) -> String {
    table(
        vec![
            "MESH",
            "NAME",
            "ZONE",
            "STATUS",
            "LDS",
            "CDS",
            "NACKS",
            "LAST NACK",
            "CERT EXPIRY",
        ],
        items
            .iter()
            .map(|item| {
                // An overview (`dataplanes+insights`) or a bare insight.
                let (i, labels) = match item.get("dataplaneInsight") {
                    Some(ins) => (ins, &item["dataplane"]["labels"]),
                    None => (item, &item["labels"]),
                };
                let acked = |suffix: &str| {
                    i["acked"]
                        .as_object()
                        .and_then(|m| m.iter().find(|(k, _)| k.ends_with(suffix)))
                        .map(|(_, v)| s(v))
                        .unwrap_or_else(|| "-".into())
                };
                let status = if i["connected"].as_bool().unwrap_or(false) {
                    "Online"
                } else {
                    "Offline"
                };
                vec![
                    s(&item["mesh"]),
                    s(&item["name"]),
                    s(&labels["kuma.io/zone"]),
                    status.to_owned(),
                    acked("Listener"),
                    acked("Cluster"),
                    i["nacks"].as_u64().unwrap_or(0).to_string(),
                    s(&i["lastNack"]),
                    s(&i["certExpiry"]),
                ]
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn traffic_permission_table_shows_selectors() {
        let t = resource_table(
            ResourceType::TrafficPermission,
            &[
                json!({"mesh": "default", "name": "web-to-backend", "creationTime": "t",
                     "sources": [{"match": {"kuma.io/service": "web"}}],
                     "destinations": [{"match": {"kuma.io/service": "backend", "version": "*"}}]}),
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].contains("SOURCES") && lines[0].contains("DESTINATIONS"),
            "{t}"
        );
        assert!(lines[1].contains("kuma.io/service=web"), "{t}");
        assert!(
            lines[1].contains("kuma.io/service=backend,version=*"),
            "{t}"
        );
    }

    #[test]
    fn mesh_and_zone_tables_default_sensibly() {
        let t = resource_table(ResourceType::Mesh, &[json!({"name": "plain"})]);
        assert!(t.lines().nth(1).unwrap().contains("off"), "{t}");
        let t = resource_table(ResourceType::Zone, &[json!({"name": "z"})]);
        assert!(t.lines().nth(1).unwrap().contains("true"), "{t}");
    }

    #[test]
    fn zones_table_sums_counters_and_says_online() {
        let t = zones_table(&[
            json!({"name": "dmz", "zoneInsight": {"online": true, "version": "0.1.0",
            "globalToZone": {"Mesh": {"resources": 2, "acks": 2, "nacks": 0}},
            "zoneToGlobal": {"Dataplane": {"resources": 3, "acks": 1, "nacks": 1, "lastNack": "bad"}}}}),
        ]);
        let row = t.lines().nth(1).unwrap();
        assert!(
            row.contains("Online") && row.contains(" 5 ") && row.contains("bad"),
            "{t}"
        );
    }

    #[test]
    fn yaml_output_applies_back() {
        let items = [
            json!({"type": "Mesh", "name": "a"}),
            json!({"type": "Mesh", "name": "b"}),
        ];
        let docs = api::parse_documents(&yaml_documents(&items).unwrap()).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1]["name"], "b");
    }
}
