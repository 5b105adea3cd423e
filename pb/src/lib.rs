//! The part of mortar's client contract that no module owns: the `UserMessage` envelope, the
//! `ErrorCode`s and the gateway's own `sys.*` routes (`pb/proto/mortar.proto`). Each module crate
//! owns its own protos.
//!
//! Layout:
//! - [`mortar`] (re-exported at the crate root): the [`UserMessage`] envelope, [`ErrorCode`] and the
//!   `sys.*` messages.
//! - [`descriptors`], [`contract`], [`route_method`] and [`merge_descriptor_sets`]: descriptor
//!   pools and sets, so a client can encode and decode any route's message from JSON without code
//!   written for it, and a node can check each route against its rpc.
//!
//! Routes map to services: route `main.sub` is the method whose snake_case name is `sub` in the
//! service whose lower-cased name is `main`; a server-streaming method declares a push route.

use prost_reflect::{DescriptorError, DescriptorPool, MethodDescriptor};
use std::sync::LazyLock;

/// The envelope, error codes and `sys.*` messages (proto package `mortar`).
#[allow(missing_docs, clippy::all)]
pub mod mortar {
    include!(concat!(env!("OUT_DIR"), "/mortar.rs"));
}

pub use mortar::{Descriptors, Empty, ErrorCode, Kick, Ping, Pong, UserMessage};

static DESCRIPTORS: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin")).as_ref())
        .expect("the descriptor set embedded at build time decodes")
});

/// The envelope's and `sys.*`'s messages, enums and services, as compiled at build time.
pub fn descriptors() -> &'static DescriptorPool {
    &DESCRIPTORS
}

/// The whole contract of a set of modules: [`descriptors`] plus each encoded
/// `FileDescriptorSet` of `sets` (a file already in the pool with the same content is skipped).
///
/// # Errors
/// When a set does not decode, refers to a type it does not define, or holds a file whose name
/// another set uses for different content.
pub fn contract<'a>(sets: impl IntoIterator<Item = &'a [u8]>) -> Result<DescriptorPool, DescriptorError> {
    let mut pool = descriptors().clone();
    for set in sets {
        pool.decode_file_descriptor_set(set)?;
    }
    Ok(pool)
}

/// The proto method in `pool` that declares route `main.sub`, if any.
///
/// For a request route its input type is the request and its output type the reply; for a push
/// route (server-streaming) its output type is the push body.
pub fn route_method(pool: &DescriptorPool, main: &str, sub: &str) -> Option<MethodDescriptor> {
    pool.services()
        .filter(|service| service.name().eq_ignore_ascii_case(main))
        .find_map(|service| service.methods().find(|method| snake_case(method.name()) == sub))
}

/// One `FileDescriptorSet` with the files of every set in `sets`, each file name once (the first
/// seen wins); sets that do not decode are skipped. For a view of a cluster whose nodes each
/// describe the modules they serve.
pub fn merge_descriptor_sets(sets: &[bytes::Bytes]) -> bytes::Bytes {
    use prost::Message as _;
    use prost_reflect::prost_types::FileDescriptorSet;
    let mut names = std::collections::HashSet::new();
    let file = sets
        .iter()
        .filter_map(|set| FileDescriptorSet::decode(set.clone()).ok())
        .flat_map(|set| set.file)
        .filter(|file| names.insert(file.name.clone()))
        .collect();
    FileDescriptorSet { file }.encode_to_vec().into()
}

/// `SayHello` → `say_hello`: how a proto method name becomes the `sub` of its route.
pub fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, ch) in name.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

impl ErrorCode {
    /// The wire name of a code number (`"NO_ROUTE"`), or the number itself for module codes.
    pub fn name_of(code: i32) -> String {
        match ErrorCode::try_from(code) {
            Ok(known) => known.as_str_name().to_owned(),
            Err(_) => code.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn envelope_round_trips_and_keeps_field_numbers() {
        let msg = UserMessage {
            main_type: "echo".into(),
            sub_type: "say".into(),
            code: ErrorCode::NoRoute as i32,
            data: bytes::Bytes::from_static(b"\x0a\x02hi"),
            seq: 7,
            reason: "no worker serves module \"echo\"".into(),
        };
        let wire = msg.encode_to_vec();
        // Field 1 (main_type) is a length-delimited field: tag byte 0x0a.
        assert_eq!(wire[0], 0x0a);
        assert_eq!(UserMessage::decode(wire.as_slice()).unwrap(), msg);
    }

    /// The envelope as clients built before field 6 know it.
    #[derive(Clone, PartialEq, prost::Message)]
    struct EnvelopeV1 {
        #[prost(string, tag = "1")]
        main_type: String,
        #[prost(string, tag = "2")]
        sub_type: String,
        #[prost(int32, tag = "3")]
        code: i32,
        #[prost(bytes = "vec", tag = "4")]
        data: Vec<u8>,
        #[prost(uint32, tag = "5")]
        seq: u32,
    }

    #[test]
    fn a_reason_is_field_6_and_clients_that_ignore_it_read_the_rest() {
        let msg = UserMessage {
            main_type: "user".into(),
            sub_type: "register".into(),
            code: ErrorCode::BadRequest as i32,
            seq: 3,
            reason: "account must be 3–32 characters".into(),
            ..Default::default()
        };
        let wire = msg.encode_to_vec();
        // Field 6, length-delimited: tag byte 0x32, then the length and the UTF-8 text.
        let reason = msg.reason.as_bytes();
        assert!(wire.ends_with(&[&[0x32, reason.len() as u8][..], reason].concat()));
        let old = EnvelopeV1::decode(wire.as_slice()).unwrap();
        assert_eq!(
            (old.main_type.as_str(), old.sub_type.as_str(), old.code, old.seq),
            ("user", "register", ErrorCode::BadRequest as i32, 3)
        );
        // No reason, no bytes: an OK reply is as it was.
        let ok = UserMessage { seq: 3, ..Default::default() };
        assert_eq!(ok.encode_to_vec(), EnvelopeV1 { seq: 3, ..Default::default() }.encode_to_vec());
    }

    #[test]
    fn error_codes_are_the_contract() {
        let expected = [
            ("OK", 0),
            ("NO_ROUTE", 1),
            ("BAD_REQUEST", 2),
            ("NOT_LOGGED_IN", 3),
            ("UNAVAILABLE", 4),
            ("TIMEOUT", 5),
            ("RATE_LIMITED", 6),
            ("INTERNAL", 7),
            ("CONFLICT", 8),
            ("NOT_FOUND", 9),
            ("ALREADY_EXISTS", 10),
            ("PERMISSION_DENIED", 11),
            ("LOGGED_IN_ELSEWHERE", 12),
            ("SERVER_SHUTDOWN", 13),
        ];
        for (name, number) in expected {
            assert_eq!(ErrorCode::from_str_name(name).map(|c| c as i32), Some(number));
            assert_eq!(ErrorCode::name_of(number), name);
        }
        assert_eq!(ErrorCode::name_of(1001), "1001");
    }

    #[test]
    fn routes_resolve_to_methods() {
        let ping = route_method(descriptors(), "sys", "ping").unwrap();
        assert_eq!(ping.input().full_name(), "mortar.Ping");
        assert_eq!(ping.output().full_name(), "mortar.Pong");
        let kick = route_method(descriptors(), "sys", "kick").unwrap();
        assert!(kick.is_server_streaming());
        assert_eq!(kick.output().full_name(), "mortar.Kick");
        assert!(route_method(descriptors(), "sys", "nope").is_none());
        assert_eq!(snake_case("AddItems"), "add_items");
    }

    #[test]
    fn a_contract_adds_module_sets_and_skips_files_it_has() {
        let own = prost_reflect::prost_types::FileDescriptorSet {
            file: descriptors().files().map(|file| file.file_descriptor_proto().clone()).collect(),
        };
        let pool = contract([own.encode_to_vec().as_slice()]).unwrap();
        assert_eq!(pool.files().count(), descriptors().files().count());
        assert!(contract([b"\xff".as_slice()]).is_err());
    }
}
