//! Generates the client from the committed OpenAPI document, so the client, the spec and the
//! server (whose drift test pins the spec) cannot disagree.

use std::path::Path;

fn main() {
    let spec_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi/openapi.json");
    println!("cargo:rerun-if-changed={}", spec_path.display());
    let file = std::fs::File::open(&spec_path).expect("openapi/openapi.json exists");
    let mut document: serde_json::Value =
        serde_json::from_reader(file).expect("openapi/openapi.json is JSON");
    json_request_bodies_only(&mut document);
    let spec: openapiv3::OpenAPI =
        serde_json::from_value(document).expect("a valid OpenAPI 3.0 document");
    let mut generator = progenitor::Generator::default();
    let tokens = generator
        .generate_tokens(&spec)
        .expect("progenitor generates a client");
    let ast = syn::parse2(tokens).expect("generated code parses");
    let code = prettyplease::unparse(&ast);
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("client.rs");
    std::fs::write(out, code).expect("write the generated client");
}

/// Keeps only the `application/json` form of request bodies that also accept others (checkout
/// takes an HTML form too): progenitor generates one body type per operation, and a Rust
/// caller sends JSON.
fn json_request_bodies_only(document: &mut serde_json::Value) {
    let Some(paths) = document.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    for operation in paths
        .values_mut()
        .filter_map(|path| path.as_object_mut())
        .flat_map(|path| path.values_mut())
    {
        if let Some(content) = operation
            .pointer_mut("/requestBody/content")
            .and_then(|c| c.as_object_mut())
            && content.len() > 1
        {
            content.retain(|media_type, _| media_type.starts_with("application/json"));
        }
    }
}
