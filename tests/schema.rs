//! The configuration's JSON Schema and the example configurations: docs/ferrogate.schema.json
//! is what `ferrogate schema` prints, every file in examples/configs/ (and the packaged
//! default) names the schema and passes `check`, and the schema accepts every valid example.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const MODELINE: &str = "# yaml-language-server: $schema=";

fn ferrogate(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrogate"))
        .args(args)
        // The OIDC example reads its client secret from the environment.
        .env("OIDC_CLIENT_SECRET", "example-secret")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn example_configs() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("examples/configs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "examples/configs/ has {files:?}");
    files
}

fn schema_validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(Path::new(ROOT).join("docs/ferrogate.schema.json")).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

/// Schema errors of one YAML document, as text (empty when it is valid).
fn schema_errors(validator: &jsonschema::Validator, yaml: &str) -> String {
    let value: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
    validator
        .iter_errors(&value)
        .map(|e| format!("  {}: {e}\n", e.instance_path()))
        .collect()
}

#[test]
fn committed_schema_is_what_the_binary_prints() {
    let (ok, printed, err) = ferrogate(&["schema"]);
    assert!(ok, "{err}");
    let committed = std::fs::read_to_string(Path::new(ROOT).join("docs/ferrogate.schema.json"))
        .unwrap_or_default();
    assert!(
        printed == committed,
        "docs/ferrogate.schema.json is out of date with the config types; regenerate it:\n  \
         cargo run -- schema > docs/ferrogate.schema.json"
    );
}

#[test]
fn every_example_config_names_the_schema_and_passes_check() {
    for path in example_configs() {
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap_or_default();
        let schema = first
            .strip_prefix(MODELINE)
            .unwrap_or_else(|| panic!("{} must start with `{MODELINE}…`", path.display()));
        let schema = path.parent().unwrap().join(schema);
        assert!(
            schema.is_file(),
            "{}: no schema at {}",
            path.display(),
            schema.display()
        );
        let (ok, out, err) = ferrogate(&["check", "-c", path.to_str().unwrap()]);
        assert!(ok, "{}: {out}{err}", path.display());
    }
}

#[test]
fn packaged_config_names_the_installed_schema_and_passes_check() {
    let path = Path::new(ROOT).join("packaging/ferrogate.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with(&format!(
            "{MODELINE}file:///usr/share/ferrogate/ferrogate.schema.json\n"
        )),
        "packaging/ferrogate.yaml must name the schema the package installs"
    );
    let (ok, out, err) = ferrogate(&["check", "-c", path.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
}

/// Editors must not flag a configuration the gateway accepts: every valid example (the
/// example files, the packaged default, every docs/config.md block not marked `# invalid`)
/// matches the schema.
#[test]
fn schema_accepts_every_valid_example() {
    let validator = schema_validator();
    let mut documents: Vec<(String, String)> = example_configs()
        .into_iter()
        .chain([Path::new(ROOT).join("packaging/ferrogate.yaml")])
        .map(|path| {
            (
                path.display().to_string(),
                std::fs::read_to_string(&path).unwrap(),
            )
        })
        .collect();
    let docs = std::fs::read_to_string(Path::new(ROOT).join("docs/config.md")).unwrap();
    for (i, block) in docs.split("```yaml\n").skip(1).enumerate() {
        let yaml = block.split("```").next().unwrap();
        if !yaml.starts_with("# invalid") {
            documents.push((format!("docs/config.md example {i}"), yaml.to_owned()));
        }
    }
    for (name, yaml) in documents {
        let errors = schema_errors(&validator, &yaml);
        assert!(
            errors.is_empty(),
            "{name} does not match the schema:\n{errors}"
        );
    }
}

#[test]
fn schema_refuses_an_unknown_key_and_a_wrong_type() {
    let validator = schema_validator();
    let errors = schema_errors(
        &validator,
        "listeners: [{address: 127.0.0.1:8080, colour: blue}]\nworkers: many\n",
    );
    assert!(errors.contains("/listeners/0"), "{errors}");
    assert!(errors.contains("colour"), "{errors}");
    assert!(errors.contains("/workers"), "{errors}");
}

/// Editors show a key's description on hover: every key has one (a `///` line on its field
/// in `src/config/file*.rs`).
#[test]
fn every_key_in_the_schema_has_a_description() {
    let text = std::fs::read_to_string(Path::new(ROOT).join("docs/ferrogate.schema.json")).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut objects = vec![("(top level)".to_owned(), &schema)];
    for (name, def) in schema["$defs"].as_object().unwrap() {
        objects.push((name.clone(), def));
    }
    let mut missing = Vec::new();
    for (name, object) in objects {
        for (key, property) in object["properties"].as_object().into_iter().flatten() {
            if property.get("description").is_none() {
                missing.push(format!("{name}.{key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keys without a description: {missing:?}"
    );
}
