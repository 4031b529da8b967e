//! `docker-compose.yml` agrees with the binary: no Docker engine runs here, so this test reads
//! the file and checks each telepipe service against `telepipe <command> --help` — the command
//! exists, every `TELEPIPE_*` variable is one the command takes, the listen port is the one
//! published, the bus points at the compose Kafka, ingest instances have distinct names — and
//! that the Dockerfile builds the binary these services run.

use serde_norway::Value;
use std::collections::HashSet;
use std::process::Command;

fn root(file: &str) -> String {
    let path = format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn help(command: &[String]) -> String {
    let mut args: Vec<String> = command.to_vec();
    args.push("--help".into());
    let out = Command::new(telepipe_tests::bin())
        .args(&args)
        .output()
        .unwrap();
    assert!(out.status.success(), "telepipe {args:?} fails");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn compose_file_matches_the_cli() {
    let mut doc: Value = serde_norway::from_str(&root("docker-compose.yml")).unwrap();
    doc.apply_merge().unwrap();
    let services = doc["services"].as_mapping().expect("services");
    let names: HashSet<String> = services
        .keys()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    assert!(
        names.contains("kafka") && names.contains("scylla"),
        "{names:?}"
    );
    assert!(services[&Value::from("kafka")]["image"]
        .as_str()
        .unwrap()
        .starts_with("apache/kafka"));

    let mut roles = Vec::new();
    let mut instances = HashSet::new();
    for (name, svc) in services {
        let name = name.as_str().unwrap();
        if svc.get("build").is_none() {
            continue;
        }
        let command: Vec<String> = svc["command"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{name}: command"))
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        roles.push(command[0].clone());
        let h = help(&command);
        let env = svc["environment"].as_mapping().unwrap();
        for (k, v) in env {
            let k = k.as_str().unwrap();
            assert!(h.contains(k), "{name}: `telepipe {command:?}` takes no {k}");
            let v = v.as_str().unwrap_or_default();
            match k {
                "TELEPIPE_LISTEN" => {
                    let port = v.rsplit(':').next().unwrap();
                    let published = svc["ports"]
                        .as_sequence()
                        .unwrap()
                        .iter()
                        .any(|p| p.as_str().unwrap().ends_with(&format!(":{port}")));
                    assert!(
                        published,
                        "{name}: listens on {port} but does not publish it"
                    );
                    assert!(
                        v.starts_with("0.0.0.0:"),
                        "{name}: listen on all interfaces"
                    );
                }
                "TELEPIPE_BUS" => {
                    let host = v
                        .strip_prefix("kafka://")
                        .unwrap()
                        .split(':')
                        .next()
                        .unwrap();
                    assert!(
                        names.contains(host),
                        "{name}: bus host {host} is no service"
                    );
                }
                "TELEPIPE_STORE" => {
                    let host = v
                        .strip_prefix("scylla://")
                        .unwrap()
                        .split(':')
                        .next()
                        .unwrap();
                    assert!(
                        names.contains(host),
                        "{name}: store host {host} is no service"
                    );
                }
                "TELEPIPE_INSTANCE" => assert!(instances.insert(v.to_owned()), "{name}: {v} twice"),
                _ => {}
            }
        }
        for required in [
            "TELEPIPE_BUS",
            "TELEPIPE_STORE",
            "TELEPIPE_SEAL_KEY",
            "TELEPIPE_INSTANCE",
        ] {
            assert!(env.contains_key(required), "{name}: no {required}");
        }
    }
    assert_eq!(
        roles.iter().filter(|r| *r == "ingest").count(),
        2,
        "{roles:?}"
    );
    assert!(roles.contains(&"processor".into()) && roles.contains(&"egress".into()));

    let dockerfile = root("Dockerfile");
    assert!(dockerfile.contains("cargo build --release -p telepipe"));
    assert!(dockerfile.contains(r#"ENTRYPOINT ["telepipe"]"#));
}
