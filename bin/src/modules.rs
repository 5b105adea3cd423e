//! The module crates linked into the `mortar` binary.
//!
//! Modules register themselves through `inventory`, but a crate nothing names is never linked:
//! every module crate is named here. Add a line when you add a module crate.

use mortar_echo as _;

/// The names of the modules linked into this binary, sorted.
pub fn names() -> Vec<&'static str> {
    let mut names: Vec<_> = mortar::module::registered().map(|decl| (decl.build)().name()).collect();
    names.sort_unstable();
    names
}

#[cfg(test)]
mod tests {
    use mortar::route::Access;

    #[test]
    fn every_module_crate_is_linked() {
        assert_eq!(super::names(), ["echo"]);
    }

    /// Clients encode requests from the proto contract: a client route whose types differ from its
    /// proto method would be unusable from JSON and from generated clients.
    #[test]
    fn every_client_route_matches_the_proto_contract() {
        let routes: Vec<_> = mortar::route::registered().filter(|r| r.access == Access::Client).collect();
        assert!(!routes.is_empty());
        for route in routes {
            let (main, sub) = route.path.split_once('.').expect("routes are main.sub");
            let method = mortar_pb::route_method(main, sub)
                .unwrap_or_else(|| panic!("route {} has no rpc in pb/proto", route.path));
            let (request, reply) = (route.types)();
            assert_eq!(method.input().full_name(), request, "request type of {}", route.path);
            assert_eq!(method.output().full_name(), reply, "reply type of {}", route.path);
        }
    }
}
