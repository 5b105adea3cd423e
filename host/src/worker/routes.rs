//! The route table: the handlers of the modules a node enables, looked up by `main` and `sub`.

use mortar::{
    Module,
    module::ModuleDecl,
    route::{Access, Route},
};
use std::collections::{BTreeSet, HashMap};

/// Why a route table could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// Two handlers claim one route.
    #[error("route `{route}` is declared twice: by {first} and by {second}")]
    DuplicateRoute {
        /// The route.
        route: &'static str,
        /// Where the first handler is defined.
        first: &'static str,
        /// Where the second handler is defined.
        second: &'static str,
    },
    /// Two modules share a name.
    #[error("module `{name}` is declared twice: in {first} and in {second}")]
    DuplicateModule {
        /// The name.
        name: &'static str,
        /// Where the first module is declared.
        first: &'static str,
        /// Where the second module is declared.
        second: &'static str,
    },
    /// A route's `main` names no declared module.
    #[error(
        "route `{route}` (defined at {defined_at}) belongs to no module: declare `mortar::module!(\"{module}\")`"
    )]
    Orphan {
        /// The route.
        route: &'static str,
        /// Its module part.
        module: &'static str,
        /// Where its handler is defined.
        defined_at: &'static str,
    },
    /// The config enables a module that is not linked into this binary.
    #[error("config enables module `{name}`, which this binary does not have (it has: {available})")]
    UnknownModule {
        /// The name in the config.
        name: String,
        /// The modules this binary has, comma-separated.
        available: String,
    },
}

/// The enabled modules and their routes.
pub struct RouteTable {
    routes: HashMap<&'static str, HashMap<&'static str, &'static Route>>,
    modules: Vec<Box<dyn Module>>,
}

impl RouteTable {
    /// Builds the table from every module and route linked into this program.
    ///
    /// `enabled` names the modules to serve; empty serves all of them.
    ///
    /// # Errors
    /// See [`RouteError`]: duplicates and orphans are errors even for modules not enabled, so a
    /// broken binary is caught on any node.
    pub fn from_registry(enabled: &[String]) -> Result<Self, RouteError> {
        Self::build(mortar::module::registered(), mortar::route::registered(), enabled)
    }

    /// Builds the table from the given declarations.
    ///
    /// # Errors
    /// See [`RouteTable::from_registry`].
    pub fn build<'a>(
        modules: impl IntoIterator<Item = &'a ModuleDecl>,
        routes: impl IntoIterator<Item = &'static Route>,
        enabled: &[String],
    ) -> Result<Self, RouteError> {
        let mut declared: HashMap<&'static str, (&'static str, Box<dyn Module>)> = HashMap::new();
        for decl in modules {
            let module = (decl.build)();
            let name = module.name();
            if let Some((first, _)) = declared.get(name) {
                return Err(RouteError::DuplicateModule { name, first, second: decl.defined_at });
            }
            declared.insert(name, (decl.defined_at, module));
        }
        let names: BTreeSet<&'static str> = declared.keys().copied().collect();
        for name in enabled {
            if !names.contains(name.as_str()) {
                let available = names.iter().copied().collect::<Vec<_>>().join(", ");
                return Err(RouteError::UnknownModule { name: name.clone(), available });
            }
        }
        let is_enabled = |name: &str| enabled.is_empty() || enabled.iter().any(|e| e == name);

        let mut table: HashMap<&'static str, HashMap<&'static str, &'static Route>> = HashMap::new();
        for route in routes {
            let (main, sub) = route.path.split_once('.').unwrap_or((route.path, ""));
            if !names.contains(main) {
                return Err(RouteError::Orphan {
                    route: route.path,
                    module: main,
                    defined_at: route.defined_at,
                });
            }
            let subs = table.entry(main).or_default();
            if let Some(first) = subs.insert(sub, route) {
                return Err(RouteError::DuplicateRoute {
                    route: route.path,
                    first: first.defined_at,
                    second: route.defined_at,
                });
            }
        }
        table.retain(|main, _| is_enabled(main));
        let modules = declared
            .into_iter()
            .filter(|(name, _)| is_enabled(name))
            .map(|(_, (_, module))| module)
            .collect();
        Ok(Self { routes: table, modules })
    }

    /// The route `main.sub`, if an enabled module serves it.
    pub fn get(&self, main: &str, sub: &str) -> Option<&'static Route> {
        self.routes.get(main)?.get(sub).copied()
    }

    /// The route `main.sub` as a client may reach it: internal routes are hidden.
    pub fn get_for_client(&self, main: &str, sub: &str) -> Option<&'static Route> {
        self.get(main, sub).filter(|route| route.access == Access::Client)
    }

    /// The enabled modules.
    pub fn modules(&self) -> impl Iterator<Item = &dyn Module> {
        self.modules.iter().map(|module| &**module)
    }

    /// Every served route.
    pub fn routes(&self) -> impl Iterator<Item = &'static Route> + '_ {
        self.routes.values().flat_map(|subs| subs.values().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use mortar::{Code, Ctx, module::Named, route::HandlerFuture};

    fn handler(_: Ctx, _: Bytes) -> HandlerFuture {
        Box::pin(async { Err(Code::INTERNAL) })
    }

    fn types() -> (String, String) {
        (String::new(), String::new())
    }

    const fn route(path: &'static str, access: Access, defined_at: &'static str) -> Route {
        Route { path, access, handler, types, defined_at }
    }

    static SAY: Route = route("echo.say", Access::Client, "a::say");
    static SAY_AGAIN: Route = route("echo.say", Access::Client, "b::say");
    static SECRET: Route = route("echo.secret", Access::Internal, "a::secret");
    static QUERY: Route = route("pack.query", Access::Client, "p::query");

    const ECHO: ModuleDecl = ModuleDecl { build: || Box::new(Named("echo")), defined_at: "a" };
    const PACK: ModuleDecl = ModuleDecl { build: || Box::new(Named("pack")), defined_at: "p" };

    fn names(table: &RouteTable) -> Vec<&'static str> {
        let mut names: Vec<_> = table.routes().map(|route| route.path).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn looks_up_by_main_and_sub() {
        let table = RouteTable::build(&[ECHO, PACK], [&SAY, &SECRET, &QUERY], &[]).unwrap();
        assert_eq!(table.get("echo", "say").map(|r| r.defined_at), Some("a::say"));
        assert!(table.get("echo", "shout").is_none());
        assert!(table.get("mail", "say").is_none());
        assert_eq!(names(&table), ["echo.say", "echo.secret", "pack.query"]);
    }

    #[test]
    fn internal_routes_are_hidden_from_clients() {
        let table = RouteTable::build(&[ECHO], [&SAY, &SECRET], &[]).unwrap();
        assert!(table.get("echo", "secret").is_some());
        assert!(table.get_for_client("echo", "secret").is_none());
        assert!(table.get_for_client("echo", "say").is_some());
    }

    #[test]
    fn serves_only_enabled_modules() {
        let table = RouteTable::build(&[ECHO, PACK], [&SAY, &QUERY], &["pack".into()]).unwrap();
        assert_eq!(names(&table), ["pack.query"]);
        assert_eq!(table.modules().map(|m| m.name()).collect::<Vec<_>>(), ["pack"]);
    }

    #[test]
    fn duplicate_route_names_both_handlers() {
        let error = RouteTable::build(&[ECHO], [&SAY, &SAY_AGAIN], &[]).err().unwrap();
        assert_eq!(error.to_string(), "route `echo.say` is declared twice: by a::say and by b::say");
    }

    #[test]
    fn duplicate_module_is_refused() {
        let error = RouteTable::build(&[ECHO, ECHO], [], &[]).err().unwrap();
        assert!(matches!(error, RouteError::DuplicateModule { name: "echo", .. }), "{error}");
    }

    #[test]
    fn route_without_module_is_refused() {
        let error = RouteTable::build(&[ECHO], [&SAY, &QUERY], &[]).err().unwrap();
        assert!(matches!(error, RouteError::Orphan { route: "pack.query", .. }), "{error}");
    }

    #[test]
    fn unknown_enabled_module_lists_the_available_ones() {
        let error = RouteTable::build(&[ECHO, PACK], [], &["mail".into()]).err().unwrap();
        assert_eq!(
            error.to_string(),
            "config enables module `mail`, which this binary does not have (it has: echo, pack)"
        );
    }
}
