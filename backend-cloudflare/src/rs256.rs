//! The worker's [`Rs256Verifier`]: the runtime's WebCrypto (`crypto.subtle.importKey("jwk", …,
//! RSASSA-PKCS1-v1_5 / SHA-256)` then `crypto.subtle.verify`), so the wasm carries no RSA code.
//! Checked inside workerd by the core's conformance suite (`POST /__testkit/rs256`).

use base64::Engine as _;
use vultrino_core::ports::Rs256Verifier;
use worker::js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;

/// RS256 signature checks with `crypto.subtle`.
#[derive(Debug, Clone, Copy, Default)]
pub struct WebCryptoVerifier;

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn set(target: &Object, key: &str, value: &JsValue) -> Result<(), JsValue> {
    Reflect::set(target, &JsValue::from_str(key), value).map(|_| ())
}

fn method(target: &JsValue, name: &str) -> Result<Function, JsValue> {
    Reflect::get(target, &JsValue::from_str(name))?.dyn_into::<Function>()
}

async fn call(subtle: &JsValue, name: &str, args: &Array) -> Result<JsValue, JsValue> {
    let promise = method(subtle, name)?
        .apply(subtle, args)?
        .dyn_into::<Promise>()?;
    JsFuture::from(promise).await
}

async fn verify_js(n: &[u8], e: &[u8], input: &[u8], signature: &[u8]) -> Result<bool, JsValue> {
    // A JWK's `n` and `e` have no leading zero bytes (RFC 7518 §6.3.1).
    let strip = |v: &[u8]| v[v.iter().take_while(|b| **b == 0).count()..].to_vec();
    let (n, e) = (strip(n), strip(e));
    if n.is_empty() || e.is_empty() {
        return Ok(false);
    }
    let crypto = Reflect::get(&worker::js_sys::global(), &JsValue::from_str("crypto"))?;
    let subtle = Reflect::get(&crypto, &JsValue::from_str("subtle"))?;
    let jwk = Object::new();
    set(&jwk, "kty", &"RSA".into())?;
    set(&jwk, "n", &b64url(&n).into())?;
    set(&jwk, "e", &b64url(&e).into())?;
    set(&jwk, "alg", &"RS256".into())?;
    set(&jwk, "ext", &true.into())?;
    let hash = Object::new();
    set(&hash, "name", &"SHA-256".into())?;
    let algorithm = Object::new();
    set(&algorithm, "name", &"RSASSA-PKCS1-v1_5".into())?;
    set(&algorithm, "hash", &hash)?;
    let usages = Array::of1(&"verify".into());
    let key = call(
        &subtle,
        "importKey",
        &Array::of5(&"jwk".into(), &jwk, &algorithm, &false.into(), &usages),
    )
    .await?;
    let ok = call(
        &subtle,
        "verify",
        &Array::of4(
            &algorithm,
            &key,
            &Uint8Array::from(signature),
            &Uint8Array::from(input),
        ),
    )
    .await?;
    Ok(ok.as_bool() == Some(true))
}

#[async_trait::async_trait(?Send)]
impl Rs256Verifier for WebCryptoVerifier {
    async fn verify(&self, n: &[u8], e: &[u8], signing_input: &[u8], signature: &[u8]) -> bool {
        // A key WebCrypto refuses to import (malformed, out of range) is no valid signature.
        verify_js(n, e, signing_input, signature)
            .await
            .unwrap_or(false)
    }
}
