//! Routes against their protos: each handler's rpc and types, the served descriptor set, and
//! synthetic protos for tests and benches.

use super::RouteError;
use mortar_abi::route::Route;
use prost::Message as _;
use prost_reflect::DescriptorPool;
use std::collections::BTreeSet;

/// Checks `route` against its rpc in `pool` and answers the name of the file declaring it, and the
/// number of its key field when it is routed by one.
pub(super) fn check_rpc(
    pool: &DescriptorPool,
    route: &'static Route,
    place: &str,
) -> Result<(String, Option<u32>), RouteError> {
    let (main, sub) = route.path.split_once('.').unwrap_or((route.path, ""));
    let Some(method) = mortar_pb::route_method(pool, main, sub) else {
        return Err(RouteError::NoRpc {
            route: route.path,
            defined_at: place.to_owned(),
            service: camel_case(main),
            method: camel_case(sub),
        });
    };
    let (request, reply) = (route.types)();
    if method.input().full_name() != request || method.output().full_name() != reply {
        return Err(RouteError::Types {
            route: route.path,
            defined_at: place.to_owned(),
            mismatch: format!(
                "the handler takes `{request}` and returns `{reply}`, but its rpc `{}` takes `{}` and returns `{}`",
                method.full_name(),
                method.input().full_name(),
                method.output().full_name()
            ),
        });
    }
    let key = match route.key {
        None => None,
        Some(name) => Some(key_field(&method.input(), name).ok_or_else(|| RouteError::Key {
            route: route.path,
            defined_at: place.to_owned(),
            field: name,
            message: method.input().full_name().to_owned(),
        })?),
    };
    Ok((method.parent_file().name().to_owned(), key))
}

/// The number of field `name` of `message` when it can route requests: a single (not repeated)
/// string, bytes or integer field, whose value a gateway reads from the encoded request.
fn key_field(message: &prost_reflect::MessageDescriptor, name: &str) -> Option<u32> {
    use prost_reflect::Kind;
    let field = message.get_field_by_name(name)?;
    let scalar = matches!(
        field.kind(),
        Kind::String
            | Kind::Bytes
            | Kind::Int32
            | Kind::Int64
            | Kind::Uint32
            | Kind::Uint64
            | Kind::Sint32
            | Kind::Sint64
            | Kind::Fixed32
            | Kind::Fixed64
            | Kind::Sfixed32
            | Kind::Sfixed64
    );
    (scalar && !field.is_list() && !field.is_map()).then(|| field.number())
}

/// `add_items` → `AddItems`: the proto name a route part comes from.
pub(super) fn camel_case(name: &str) -> String {
    name.split('_')
        .map(|word| {
            let mut word = word.to_owned();
            if let Some(first) = word.get_mut(..1) {
                first.make_ascii_uppercase();
            }
            word
        })
        .collect()
}

/// `files` and everything they import, except `mortar.proto` (clients have it), encoded.
pub(super) fn served_set(pool: &DescriptorPool, files: &BTreeSet<String>) -> bytes::Bytes {
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    let mut queue: Vec<String> = files.iter().cloned().collect();
    while let Some(name) = queue.pop() {
        if let Some(file) = pool.get_file_by_name(&name)
            && wanted.insert(name)
        {
            queue.extend(file.dependencies().map(|dep| dep.name().to_owned()));
        }
    }
    let own: BTreeSet<String> = mortar_pb::descriptors().files().map(|file| file.name().to_owned()).collect();
    // Dependencies first, as `pool.files()` orders them, so a client can add them in order.
    let file = pool
        .files()
        .filter(|file| wanted.contains(file.name()) && !own.contains(file.name()))
        .map(|file| file.file_descriptor_proto().clone())
        .collect();
    prost_reflect::prost_types::FileDescriptorSet { file }.encode_to_vec().into()
}

/// A descriptor set declaring `routes` (`main.sub` each) in package `synthetic`, every rpc taking
/// and answering `synthetic.Msg`: for route tables in tests and benches whose handlers are not
/// made by `#[handler]`.
#[doc(hidden)]
pub fn synthetic_protos(routes: &[&str]) -> Vec<u8> {
    use prost_reflect::prost_types::{
        DescriptorProto, FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto,
        ServiceDescriptorProto,
    };
    let mut services: Vec<ServiceDescriptorProto> = Vec::new();
    for route in routes {
        let (main, sub) = route.split_once('.').unwrap_or((route, ""));
        let name = camel_case(main);
        let method = MethodDescriptorProto {
            name: Some(camel_case(sub)),
            input_type: Some(".synthetic.Msg".into()),
            output_type: Some(".synthetic.Msg".into()),
            ..Default::default()
        };
        match services.iter_mut().find(|service| service.name.as_deref() == Some(&name)) {
            Some(service) => service.method.push(method),
            None => services.push(ServiceDescriptorProto {
                name: Some(name),
                method: vec![method],
                ..Default::default()
            }),
        }
    }
    let file = FileDescriptorProto {
        name: Some("synthetic.proto".into()),
        package: Some("synthetic".into()),
        syntax: Some("proto3".into()),
        message_type: vec![DescriptorProto { name: Some("Msg".into()), ..Default::default() }],
        service: services,
        ..Default::default()
    };
    FileDescriptorSet { file: vec![file] }.encode_to_vec()
}
