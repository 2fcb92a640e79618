//! `/openapi.json`: the OpenAPI 3.1 description of the admin listener, generated from the
//! endpoint table the router uses and, for the configuration resources, from the JSON
//! Schemas of the configuration file's types.

use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

use super::endpoints::{Handler, Kind, Write, ENDPOINTS};
use crate::config::file;

/// The document, as JSON text.
pub(super) fn document() -> String {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    let mut generator = settings.into_generator();
    let schemas = [
        ("Route", generator.subschema_for::<file::Route>()),
        ("Upstream", generator.subschema_for::<file::Upstream>()),
        ("Target", generator.subschema_for::<file::Target>()),
        ("Consumer", generator.subschema_for::<file::Consumer>()),
    ];
    let mut components: Map<String, Value> = generator.take_definitions(true);
    for (name, schema) in schemas {
        components
            .entry(name.to_owned())
            .or_insert_with(|| schema.to_value());
    }
    components.insert(
        "Problem".into(),
        json!({
            "type": "object",
            "description": "RFC 9457 problem details; `errors` lists a refused change's problems",
            "properties": {
                "type": {"type": "string"}, "title": {"type": "string"},
                "status": {"type": "integer"}, "detail": {"type": "string"},
                "errors": {"type": "array", "items": {"type": "object", "properties": {
                    "path": {"type": "string"}, "message": {"type": "string"}}}}
            }
        }),
    );
    let mut paths = Map::new();
    for e in ENDPOINTS {
        let entry = paths
            .entry(e.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(ops) = entry {
            ops.insert(e.method.as_str().to_ascii_lowercase(), operation(e));
        }
    }
    let doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Ferrogate admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The admin listener of Ferrogate (docs/admin-api.md). Writes need \
                If-Match with the configuration version (the ETag of every answer)."
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        }
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

fn operation(e: &super::endpoints::Endpoint) -> Value {
    let mut op = Map::new();
    op.insert("summary".into(), e.summary.into());
    op.insert(
        "operationId".into(),
        format!("{} {}", e.method, e.path).into(),
    );
    if let Some(role) = e.role {
        op.insert("security".into(), json!([{"bearer": []}]));
        op.insert("x-role".into(), role.as_str().into());
    }
    let parameters: Vec<Value> = e
        .path
        .split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    let mut parameters = parameters;
    let writes = matches!(
        e.handler,
        Handler::Change(..) | Handler::Rollback | Handler::Batch
    );
    if writes {
        parameters.push(json!({"name": "If-Match", "in": "header", "required": true,
            "description": "The configuration version the change is made on (`\"N\"` or `*`)",
            "schema": {"type": "string"}}));
    }
    if e.handler == Handler::Diff {
        for q in ["from", "to"] {
            parameters.push(json!({"name": q, "in": "query", "required": false,
                "schema": {"type": "integer"}}));
        }
    }
    if !parameters.is_empty() {
        op.insert("parameters".into(), parameters.into());
    }
    if let Some(body) = request_body(e.handler) {
        op.insert("requestBody".into(), body);
    }
    let problem = json!({"description": "problem", "content": {"application/problem+json":
        {"schema": {"$ref": "#/components/schemas/Problem"}}}});
    let mut responses = Map::new();
    responses.insert("200".into(), json!({"description": "done"}));
    if e.role.is_some() {
        responses.insert("401".into(), problem.clone());
        responses.insert("403".into(), problem.clone());
    }
    if writes {
        // 503: the configuration store (etcd) is unreachable, or nothing is versioned.
        for status in ["412", "422", "428", "503"] {
            responses.insert(status.into(), problem.clone());
        }
    }
    op.insert("responses".into(), responses.into());
    Value::Object(op)
}

fn request_body(h: Handler) -> Option<Value> {
    let schema = match h {
        Handler::Change(_, Write::Delete) => return None,
        Handler::Change(Kind::Section, _) => json!({}),
        Handler::Change(kind, Write::Patch) => {
            json!({"description": format!("JSON merge patch (RFC 7396) of a {kind:?}")})
        }
        Handler::Change(kind, _) => json!({"$ref": format!("#/components/schemas/{kind:?}")}),
        Handler::Rollback => json!({"type": "object", "required": ["version"],
            "properties": {"version": {"type": "integer"}}}),
        Handler::Batch => json!({"type": "object", "required": ["operations"], "properties": {
            "operations": {"type": "array", "items": {"type": "object",
                "required": ["op", "path"], "properties": {
                    "op": {"enum": ["create", "replace", "patch", "delete"]},
                    "path": {"type": "string"}, "value": {}}}}}}),
        Handler::Purge => json!({"type": "object"}),
        _ => return None,
    };
    Some(json!({"required": true, "content": {"application/json": {"schema": schema}}}))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_of_the_router_is_in_the_document() {
        let doc: Value = serde_json::from_str(&document()).unwrap();
        for e in ENDPOINTS {
            let method = e.method.as_str().to_ascii_lowercase();
            assert!(
                doc["paths"][e.path][&method].is_object(),
                "{} {} is not documented",
                e.method,
                e.path
            );
        }
        assert!(doc["components"]["schemas"]["Route"].is_object());
    }
}
