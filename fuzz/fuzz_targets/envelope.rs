//! The gateway's first look at a client frame: any bytes must give a request, a refusal or a
//! close reason, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mortar_gateway::envelope::{Inbound, inspect};

fuzz_target!(|frame: &[u8]| {
    match inspect(bytes::Bytes::copy_from_slice(frame), 64) {
        Inbound::Request(msg) => assert!(msg.main_type.len() + msg.sub_type.len() <= 64),
        Inbound::Refuse(reply) => assert!(reply.main_type.is_empty() && reply.code != 0),
        Inbound::Malformed(reason) => assert!(reason.starts_with("bad envelope")),
    }
});
