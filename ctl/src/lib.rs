//! `meshctl`: the command line over a control plane's REST API.
//!
//! [`Cli`] is the whole surface (clap); [`run`] executes one command.
//! [`client::ApiClient`] turns HTTP failures into sentences, [`output`]
//! renders tables, YAML and JSON. meshctl never touches a store directly.

pub mod client;
pub mod output;

use std::io::Read;
use std::path::PathBuf;

use api::ResourceType;
use clap::{Parser, Subcommand, ValueEnum};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use client::{err, ApiClient, CliError};

#[derive(Debug, Parser)]
#[command(
    name = "meshctl",
    version,
    about = "Manage the mesh control plane through its REST API",
    after_help = "Examples:\n  meshctl apply -f policies.yaml\n  meshctl get traffic-permissions --mesh default -o yaml\n  meshctl generate zone-token --zone dmz > dmz.token\n  meshctl inspect zones\n  meshctl inspect dataplanes --mesh default"
)]
pub struct Cli {
    /// URL of the control plane's REST API.
    #[arg(
        long,
        global = true,
        env = "MESHCTL_API_ADDR",
        default_value = "http://127.0.0.1:5681"
    )]
    pub api_addr: String,
    /// File holding the API token (the control plane writes <data-dir>/admin-token).
    #[arg(long, global = true, env = "MESHCTL_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) to trust for an https:// --api-addr, besides
    /// the system's.
    #[arg(long, global = true, env = "MESHCTL_CA_CERT_FILE")]
    pub ca_cert_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Yaml,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update resources from Kuma Universal YAML (multi-document).
    #[command(
        after_help = "Examples:\n  meshctl apply -f mesh.yaml\n  cat policies.yaml | meshctl apply -f -"
    )]
    Apply {
        /// File to apply, or - for standard input.
        #[arg(short = 'f', long = "file")]
        file: String,
    },
    /// Show resources of a type, or one by name.
    #[command(
        after_help = "Examples:\n  meshctl get meshes\n  meshctl get traffic-permission allow-all --mesh default -o yaml"
    )]
    Get {
        /// meshes, traffic-permissions, dataplanes, zones or zone-ingresses (singular works too).
        #[arg(value_name = "TYPE")]
        kind: String,
        /// Show only this resource.
        name: Option<String>,
        /// Mesh of mesh-scoped types.
        #[arg(long, default_value = "default")]
        mesh: String,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Format,
    },
    /// Delete a resource.
    #[command(
        after_help = "Examples:\n  meshctl delete traffic-permission web-to-backend --mesh default\n  meshctl delete zone dmz"
    )]
    Delete {
        #[arg(value_name = "TYPE")]
        kind: String,
        name: String,
        #[arg(long, default_value = "default")]
        mesh: String,
    },
    /// Generate tokens (on the global control plane).
    #[command(subcommand)]
    Generate(Generate),
    /// Revoke tokens (on the global control plane).
    #[command(subcommand)]
    Revoke(Revoke),
    /// Show live status.
    #[command(subcommand)]
    Inspect(Inspect),
}

#[derive(Debug, Subcommand)]
pub enum Generate {
    /// A token a zone control plane connects with; printed on stdout.
    #[command(
        after_help = "Example:\n  meshctl generate zone-token --zone dmz --valid-for 720h > dmz.token"
    )]
    ZoneToken {
        #[arg(long)]
        zone: String,
        /// Lifetime such as 24h, 30d (default 30 days).
        #[arg(long)]
        valid_for: Option<String>,
        /// `zone` for a zone control plane, `ingress` for a zone ingress.
        #[arg(long, default_value = "zone")]
        scope: String,
    },
    /// A token a sidecar registers its Dataplane with; printed on stdout.
    #[command(
        after_help = "Example:\n  meshctl generate dataplane-token --mesh default --tag kuma.io/service=web > web.token"
    )]
    DataplaneToken {
        #[arg(long, default_value = "default")]
        mesh: String,
        /// A tag the dataplane may claim, KEY=VALUE; repeat for more.
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        /// Lifetime such as 24h, 30d (default one year).
        #[arg(long)]
        valid_for: Option<String>,
    },
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

#[derive(Debug, Subcommand)]
pub enum Revoke {
    /// Revoke a zone token: its zone is disconnected and cannot reconnect with it.
    #[command(after_help = "Example:\n  meshctl revoke zone-token --zone-token-file dmz.token")]
    ZoneToken {
        /// The token text.
        #[arg(
            required_unless_present = "zone_token_file",
            conflicts_with = "zone_token_file"
        )]
        token: Option<String>,
        /// File holding the zone token (--token-file is the admin token).
        #[arg(long = "zone-token-file", id = "zone_token_file")]
        file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum Inspect {
    /// Zones with their KDS status: Online/Offline, version, counters.
    Zones {
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Format,
    },
    /// Dataplanes with their proxy status: Online/Offline, ACKed versions,
    /// last NACK, certificate expiry.
    Dataplanes {
        /// Only this mesh (default: every mesh).
        #[arg(long)]
        mesh: Option<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Format,
    },
}

fn token(cli: &Cli) -> Result<Option<String>, CliError> {
    if let Some(path) = &cli.token_file {
        let t = std::fs::read_to_string(path).map_err(|e| {
            err(format!(
                "cannot read the token file {}: {e}",
                path.display()
            ))
        })?;
        return Ok(Some(t.trim().to_owned()));
    }
    Ok(std::env::var("MESHCTL_TOKEN")
        .ok()
        .map(|t| t.trim().to_owned()))
}

fn resource_type(word: &str) -> Result<ResourceType, CliError> {
    ResourceType::from_cli_word(word).ok_or_else(|| {
        let known: Vec<_> = ResourceType::ALL.iter().map(|t| t.plural()).collect();
        err(format!(
            "unknown type {word:?}; use one of {}",
            known.join(", ")
        ))
    })
}

/// The REST path of a type (and name) in a mesh.
pub fn path(ty: ResourceType, mesh: &str, name: Option<&str>) -> String {
    let base = if ty.is_mesh_scoped() {
        format!("/meshes/{mesh}/{}", ty.plural())
    } else {
        format!("/{}", ty.plural())
    };
    match name {
        Some(n) => format!("{base}/{n}"),
        None => base,
    }
}

/// Runs one command, writing results to stdout.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let api = ApiClient::new(&cli.api_addr, token(&cli)?)?.trusting(cli.ca_cert_file.as_deref())?;
    match &cli.command {
        Command::Apply { file } => apply(&api, file),
        Command::Get {
            kind,
            name,
            mesh,
            output,
        } => get(&api, resource_type(kind)?, name.as_deref(), mesh, *output),
        Command::Delete { kind, name, mesh } => {
            let ty = resource_type(kind)?;
            api.send(Method::DELETE, &path(ty, mesh, Some(name)), None)?;
            println!("deleted {ty} {name}");
            Ok(())
        }
        Command::Generate(Generate::ZoneToken {
            zone,
            valid_for,
            scope,
        }) => {
            let mut body = json!({ "zone": zone, "scope": scope });
            if let Some(v) = valid_for {
                body["validFor"] = json!(v);
            }
            let reply = api.send(Method::POST, "/tokens/zone", Some(&body))?;
            println!("{}", reply.text.trim());
            Ok(())
        }
        Command::Generate(Generate::DataplaneToken {
            mesh,
            tags,
            valid_for,
        }) => {
            let mut grouped: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
            for (k, v) in tags {
                grouped.entry(k).or_default().push(v);
            }
            let mut body = json!({ "mesh": mesh, "tags": grouped });
            if let Some(v) = valid_for {
                body["validFor"] = json!(v);
            }
            let reply = api.send(Method::POST, "/tokens/dataplane", Some(&body))?;
            println!("{}", reply.text.trim());
            Ok(())
        }
        Command::Revoke(Revoke::ZoneToken { token, file }) => {
            let token = match (token, file) {
                (Some(t), _) => t.clone(),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .map_err(|e| err(format!("cannot read {}: {e}", f.display())))?,
                (None, None) => return Err(err("give the token or --zone-token-file")),
            };
            let reply = api.send(
                Method::POST,
                "/tokens/zone/revoke",
                Some(&json!({ "token": token.trim() })),
            )?;
            let v = reply.json()?;
            println!(
                "revoked the zone token {} of zone {}",
                v["revoked"].as_str().unwrap_or(""),
                v["zone"].as_str().unwrap_or("")
            );
            Ok(())
        }
        Command::Inspect(Inspect::Zones { output }) => {
            let v = api.send(Method::GET, "/zones+insights", None)?.json()?;
            let items = v["items"].as_array().cloned().unwrap_or_default();
            print_items(&items, *output, output::zones_table)
        }
        Command::Inspect(Inspect::Dataplanes { mesh, output }) => {
            let path = match mesh {
                Some(m) => format!("/meshes/{m}/dataplanes+insights"),
                None => "/dataplanes+insights".to_owned(),
            };
            let v = api.send(Method::GET, &path, None)?.json()?;
            let items = v["items"].as_array().cloned().unwrap_or_default();
            print_items(&items, *output, output::dataplanes_table)
        }
    }
}

fn print_items(
    items: &[Value],
    format: Format,
    table: impl Fn(&[Value]) -> String,
) -> Result<(), CliError> {
    match format {
        Format::Table => println!("{}", table(items)),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(items).unwrap_or_default()
        ),
        Format::Yaml => print!(
            "{}",
            output::yaml_documents(items).map_err(|e| err(e.to_string()))?
        ),
    }
    Ok(())
}

fn read_input(file: &str) -> Result<String, CliError> {
    if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| err(format!("cannot read standard input: {e}")))?;
        Ok(s)
    } else {
        std::fs::read_to_string(file).map_err(|e| err(format!("cannot read {file}: {e}")))
    }
}

fn apply(api: &ApiClient, file: &str) -> Result<(), CliError> {
    let text = read_input(file)?;
    let docs = api::parse_documents(&text).map_err(|e| {
        err(format!(
            "document {} is not valid YAML: {}; nothing was applied",
            e.index, e.reason
        ))
    })?;
    if docs.is_empty() {
        return Err(err("no resources found in the input"));
    }
    for (index, doc) in docs.into_iter().enumerate() {
        let r = api::Resource::from_value(doc.clone()).map_err(|e| {
            let lines: Vec<String> = e
                .violations
                .iter()
                .map(|v| {
                    format!(
                        "\n  {}: {}",
                        if v.field.is_empty() {
                            "(resource)"
                        } else {
                            &v.field
                        },
                        v.reason
                    )
                })
                .collect();
            err(format!(
                "document {index}: invalid resource{}",
                lines.concat()
            ))
        })?;
        let ty = r.ty();
        let mesh = r.mesh.clone().unwrap_or_else(|| "default".into());
        let mut body = doc;
        if ty.is_mesh_scoped() && body.get("mesh").is_none() {
            body["mesh"] = json!(mesh);
        }
        let label = if ty.is_mesh_scoped() {
            format!("{ty} {mesh}/{}", r.name)
        } else {
            format!("{ty} {}", r.name)
        };
        let reply = api
            .send(Method::PUT, &path(ty, &mesh, Some(&r.name)), Some(&body))
            .map_err(|e| err(format!("document {index} ({label}): {e}")))?;
        let verb = if reply.status == StatusCode::CREATED {
            "created"
        } else {
            "updated"
        };
        println!("{label} {verb}");
    }
    Ok(())
}

fn get(
    api: &ApiClient,
    ty: ResourceType,
    name: Option<&str>,
    mesh: &str,
    format: Format,
) -> Result<(), CliError> {
    if let Some(name) = name {
        let v = api
            .send(Method::GET, &path(ty, mesh, Some(name)), None)?
            .json()?;
        return match format {
            Format::Json => {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                Ok(())
            }
            _ => print_items(&[v], format, |i| output::resource_table(ty, i)),
        };
    }
    let mut items = Vec::new();
    let mut next = Some(format!("{}?size=1000", path(ty, mesh, None)));
    while let Some(url) = next {
        let page = api.send(Method::GET, &url, None)?.json()?;
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        next = page["next"].as_str().map(str::to_owned);
    }
    print_items(&items, format, |i| output::resource_table(ty, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_kuma() {
        assert_eq!(
            path(ResourceType::Mesh, "x", Some("default")),
            "/meshes/default"
        );
        assert_eq!(
            path(ResourceType::TrafficPermission, "default", Some("a")),
            "/meshes/default/traffic-permissions/a"
        );
        assert_eq!(
            path(ResourceType::Dataplane, "m", None),
            "/meshes/m/dataplanes"
        );
        assert_eq!(
            path(ResourceType::ZoneIngress, "m", Some("zi")),
            "/zone-ingresses/zi"
        );
    }

    #[test]
    fn the_command_line_parses_as_documented() {
        let cli = Cli::try_parse_from([
            "meshctl",
            "get",
            "traffic-permission",
            "tp",
            "--mesh",
            "m",
            "-o",
            "yaml",
        ])
        .unwrap();
        assert!(
            matches!(cli.command, Command::Get { ref kind, name: Some(ref n), ref mesh, output: Format::Yaml } if kind == "traffic-permission" && n == "tp" && mesh == "m")
        );
        let cli = Cli::try_parse_from([
            "meshctl",
            "generate",
            "zone-token",
            "--zone",
            "dmz",
            "--valid-for",
            "24h",
        ])
        .unwrap();
        assert!(
            matches!(cli.command, Command::Generate(Generate::ZoneToken { ref zone, .. }) if zone == "dmz")
        );
        assert!(Cli::try_parse_from(["meshctl", "revoke", "zone-token"]).is_err());
        let cli = Cli::try_parse_from([
            "meshctl",
            "generate",
            "dataplane-token",
            "--tag",
            "kuma.io/service=web",
            "--tag",
            "version=v1",
        ])
        .unwrap();
        assert!(
            matches!(cli.command, Command::Generate(Generate::DataplaneToken { ref tags, ref mesh, .. }) if tags.len() == 2 && mesh == "default")
        );
        assert!(Cli::try_parse_from([
            "meshctl",
            "generate",
            "dataplane-token",
            "--tag",
            "novalue"
        ])
        .is_err());
        assert!(Cli::try_parse_from(["meshctl", "apply"]).is_err());
        assert!(resource_type("zone-ingresses").is_ok());
        assert!(resource_type("nope").is_err());
    }
}
