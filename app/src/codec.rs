//! JSON for the results and errors of server functions, decoded from text.
//!
//! Why not server_fn's own `Json`: the browser deserializes the same types
//! in two places, a page's resources from the HTML (Leptos' resource codec:
//! `serde_json::from_str`) and a server function's response (server_fn's
//! `JsonEncoding`: `serde_json::from_slice`). serde_json's deserializer is
//! generic over its reader, so every type's deserializer was compiled twice
//! into the wasm. Decoding responses as `&str` too keeps one copy. The wire
//! format is the same JSON.

use leptos::server_fn::codec::Post;
use leptos::server_fn::{Bytes, ContentType, Decodes, Encodes, Format, FormatType};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// JSON, encoded with `serde_json::to_vec`, decoded with `serde_json::from_str`.
pub struct JsonText;

impl ContentType for JsonText {
    const CONTENT_TYPE: &'static str = "application/json";
}

impl FormatType for JsonText {
    const FORMAT_TYPE: Format = Format::Text;
}

impl<T: Serialize> Encodes<T> for JsonText {
    type Error = serde_json::Error;

    fn encode(output: &T) -> Result<Bytes, Self::Error> {
        serde_json::to_vec(output).map(Bytes::from)
    }
}

impl<T: DeserializeOwned> Decodes<T> for JsonText {
    type Error = serde_json::Error;

    fn decode(bytes: Bytes) -> Result<T, Self::Error> {
        let text =
            std::str::from_utf8(&bytes).map_err(<serde_json::Error as serde::de::Error>::custom)?;
        serde_json::from_str(text)
    }
}

/// The output encoding of every server function: `#[server(output = Json)]`.
pub type Json = Post<JsonText>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_it_encodes_and_refuses_bad_utf8() {
        let v = vec![("a".to_string(), 1u32), ("é".to_string(), 2)];
        let bytes = <JsonText as Encodes<_>>::encode(&v).unwrap();
        let back: Vec<(String, u32)> = <JsonText as Decodes<_>>::decode(bytes).unwrap();
        assert_eq!(back, v);
        let bad = Bytes::from_static(b"[\"\xff\"]");
        assert!(<JsonText as Decodes<Vec<String>>>::decode(bad).is_err());
    }
}
