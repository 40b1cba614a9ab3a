//! Generates the client from the committed OpenAPI document, so the client, the spec and the
//! server (whose drift test pins the spec) cannot disagree.

use std::path::Path;

fn main() {
    let spec_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi/openapi.json");
    println!("cargo:rerun-if-changed={}", spec_path.display());
    let file = std::fs::File::open(&spec_path).expect("openapi/openapi.json exists");
    let spec: openapiv3::OpenAPI = serde_json::from_reader(file)
        .expect("openapi/openapi.json is a valid OpenAPI 3.0 document");
    let mut generator = progenitor::Generator::default();
    let tokens = generator
        .generate_tokens(&spec)
        .expect("progenitor generates a client");
    let ast = syn::parse2(tokens).expect("generated code parses");
    let code = prettyplease::unparse(&ast);
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("client.rs");
    std::fs::write(out, code).expect("write the generated client");
}
