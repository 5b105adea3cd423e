//! The module crates linked into the `mortar` binary: every crate under `modules/`, named by the
//! lines bin/build.rs generates from that folder.

include!(concat!(env!("OUT_DIR"), "/linked_modules.rs"));

/// The names of the modules linked into this binary, sorted.
pub fn names() -> Vec<&'static str> {
    let mut names: Vec<_> = mortar::module::registered().map(|decl| (decl.build)().name()).collect();
    names.sort_unstable();
    names
}

/// The routes linked into this binary as `{"routes":[{"route","access","request","reply","key"?}]}`,
/// sorted by route (what `mortar routes` prints); `key` names the request field a keyed route is
/// routed by.
pub fn routes_json() -> serde_json::Value {
    use mortar::route::Access;
    let mut routes: Vec<_> = mortar::route::registered().collect();
    routes.sort_unstable_by_key(|route| route.path);
    let routes: Vec<_> = routes
        .into_iter()
        .map(|route| {
            let (request, reply) = (route.types)();
            let access = match route.access {
                Access::Client => "client",
                Access::Public => "public",
                Access::Internal => "internal",
            };
            let mut json = serde_json::json!({ "route": route.path, "access": access, "request": request, "reply": reply });
            if let Some(key) = route.key {
                json["key"] = key.into();
            }
            json
        })
        .collect();
    serde_json::json!({ "routes": routes })
}

#[cfg(test)]
mod tests {
    /// Each crate under modules/ declares its modules in its own crate (`mortar_echo::…`), and
    /// every one of them registered: none was dropped by the linker.
    #[test]
    fn every_module_crate_is_linked() {
        let mut declaring: Vec<String> = mortar::module::registered()
            .filter_map(|decl| decl.defined_at.split("::").next())
            .map(|krate| krate.replace('_', "-"))
            .collect();
        declaring.sort_unstable();
        declaring.dedup();
        assert_eq!(declaring, super::CRATES);
        assert!(super::names().contains(&"echo"));
    }

    /// The route table's start-time checks pass for the modules this binary links: every route
    /// has its rpc, with the handler's types.
    #[test]
    fn the_linked_modules_form_a_route_table() {
        let table = mortar_runtime::routes::RouteTable::from_registry(&[]).unwrap();
        assert!(table.get_for_client("echo", "say").is_some());
        assert!(table.get_for_client("echo", "upper").is_none(), "echo.upper is internal");
    }
}
