//! What clients send, read safely: JSON request bodies, and serde errors turned into messages
//! that never quote the value given (it may be a secret put in the wrong place).

use serde::de::DeserializeOwned;

use crate::error::{Code, Error, Result};

/// Parse a JSON request body: 400 `invalid_json` when it is empty or not JSON at all, 400
/// `schema_mismatch` when it is JSON that does not fit `T` (a missing or unknown field, a wrong
/// type).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    if body.is_empty() {
        return Err(Error::bad_request("a JSON body is required").with_code(Code::InvalidJson));
    }
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Error::bad_request(format!(
            "the body does not fit this route: {}",
            field_error(&e)
        ))
        .with_code(Code::SchemaMismatch),
        _ => Error::bad_request(format!("invalid JSON body: {}", field_error(&e)))
            .with_code(Code::InvalidJson),
    })
}

/// A serde error as a client may see it. serde quotes what the client sent in several errors
/// (`invalid type: string "sk-live…", expected …`, `unknown variant \`…\``) — which may be a
/// secret put in the wrong place — so those keep only what was expected and where.
pub(crate) fn field_error(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    // These messages quote what the client sent; keep only what was expected, and where.
    const QUOTING: [(&str, &str); 5] = [
        ("invalid type", "wrong type"),
        ("invalid value", "wrong value"),
        ("invalid length", "wrong length"),
        ("unknown variant", "unknown name"),
        ("unknown field", "unknown field"),
    ];
    let safe = match QUOTING.iter().find(|(p, _)| msg.starts_with(p)) {
        Some((_, label)) => match msg.find(", expected") {
            Some(i) => format!("{label}{}", &msg[i..]),
            None => format!("{label} at line {} column {}", e.line(), e.column()),
        },
        None => msg,
    };
    safe.chars().take(200).collect()
}

/// Unicode format characters (general category Cf) that change how text displays without
/// showing themselves: bidirectional overrides and isolates, zero-width characters, the soft
/// hyphen, the byte-order mark. An Access identity holding one could read as another actor in
/// the audit log (review 2026-12-06, finding 5), so it is refused like a control character;
/// so is a token name holding one (review of agent tokens, 2026-12-06, finding 6).
pub(crate) fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Login {
        username: String,
    }

    fn code(body: &str) -> Code {
        parse_json::<Login>(body.as_bytes()).unwrap_err().code()
    }

    /// Not JSON is `invalid_json`; JSON of the wrong shape is `schema_mismatch`.
    #[test]
    fn syntax_and_schema_errors_have_their_own_codes() {
        assert_eq!(code(""), Code::InvalidJson);
        assert_eq!(code("{"), Code::InvalidJson);
        assert_eq!(code("username=x"), Code::InvalidJson);
        assert_eq!(code("{}"), Code::SchemaMismatch);
        assert_eq!(code("[]"), Code::SchemaMismatch);
        assert_eq!(code(r#"{"username": 1}"#), Code::SchemaMismatch);
        assert_eq!(
            code(r#"{"username": "a", "extra": 1}"#),
            Code::SchemaMismatch
        );
        assert!(parse_json::<Login>(br#"{"username": "a"}"#).is_ok());
    }
}
