//! The `Stripe-Signature` header parser and verifier on arbitrary headers and bodies: any
//! input is refused or accepted, never a panic or a hang.
#![no_main]

use billing_sync_projection::stripe_signature::{StripeVerifier, parse_signature_header, sign};
use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;

const SECRET: &str = "whsec_fuzz";
const NOW: i64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    // The first line is the header, the rest the body.
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (header, body) = data.split_at(split);
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    let _ = parse_signature_header(header);
    let verifier = StripeVerifier::new(vec![SecretString::from(SECRET)], 300);
    let _ = verifier.verify(Some(header), body, NOW);
    // A header built from the input's own signature must verify: the parser and the signer
    // agree on every body.
    let valid = format!("t={NOW},v1={}", sign(SECRET, NOW, body));
    assert!(verifier.verify(Some(&valid), body, NOW).is_ok());
});
