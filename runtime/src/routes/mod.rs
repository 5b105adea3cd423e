//! The route table: the handlers of the modules a node enables, looked up by `main` and `sub`,
//! each checked against its rpc in its module's protos, with the chain of layers (middleware)
//! each route runs through.
//!
//! Layout:
//! - this file: [`RouteTable`], built from the catalog and looked up per request (the router).
//! - [`catalog`]: where modules and their declarations come from ([`ModuleSource`], [`Origin`]),
//!   and which modules keep their documents here ([`DocumentHome`]).
//! - [`contract`]: each route checked against its rpc, the served descriptor set.
//! - [`error`]: [`RouteError`], [`LoadError`].

pub mod catalog;
pub mod contract;
pub mod error;

use super::{
    library::Library,
    tables::{Tables, TablesError},
};
use catalog::crate_of;
pub use catalog::{DocumentHome, ModuleSource, Origin};
pub use contract::synthetic_protos;
use contract::{check_rpc, served_set};
pub use error::{LoadError, RouteError};
use mortar_abi::{
    config::ConfigDecl,
    job::JobDecl,
    layer::{Layer, LayerFn},
    module::Module,
    module::{PresenceHook, StartHook},
    route::{Access, Route},
    table::TableDecl,
};
use mortar_cluster::rpc::Status;
use prost_reflect::DescriptorPool;
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::PathBuf,
    sync::Arc,
};

/// The enabled modules and their routes.
pub struct RouteTable {
    routes: foldhash::HashMap<&'static str, foldhash::HashMap<&'static str, &'static Route>>,
    modules: Vec<(Origin, Box<dyn Module>)>,
    /// The served modules' protos, encoded as one `FileDescriptorSet` (without `mortar.proto`).
    descriptors: bytes::Bytes,
    /// Client routes the config makes public (`worker.public_routes`).
    public: foldhash::HashSet<&'static str>,
    /// The enabled modules' `on_online` and `on_offline` hooks, by module and status.
    hooks: HashMap<(&'static str, Status), Hook>,
    /// The enabled modules' `on_start` hooks, with the route their context names
    /// (`MODULE.on_start`).
    starts: Vec<(&'static str, StartHook)>,
    /// The enabled modules' scheduled jobs.
    jobs: Vec<&'static JobDecl>,
    /// Every declared layer, by name, and where it is declared.
    layers: BTreeMap<&'static str, (&'static Layer, String)>,
    /// The layers of each route that has any, outermost first.
    chains: foldhash::HashMap<&'static str, Arc<[LayerFn]>>,
    /// Every declared game config table, by file, and where it is declared.
    tables: BTreeMap<&'static str, (&'static TableDecl, String)>,
    /// Every declared module config section, by name, and where it is declared.
    configs: BTreeMap<&'static str, (&'static ConfigDecl, String)>,
    /// The enabled modules that keep documents.
    documents: BTreeSet<&'static str>,
    /// Every route the loaded protos declare, with the full name of the message a push on it
    /// carries: a server-streaming rpc's output (a push route), or a request route's reply type.
    pushes: HashMap<String, String>,
    /// The served routes routed by a request field (`key = field`), with the field's number.
    keyed: BTreeMap<&'static str, u32>,
    /// The modules' config sections as this node read them (see [`RouteTable::configure`]).
    configured: HashMap<&'static str, mortar_abi::config::Values>,
    /// The game config tables as this node loads them (see [`RouteTable::load_tables`]).
    loaded_tables: Option<Tables>,
}

/// A module's `on_online` or `on_offline` hook, and the route its context names
/// (`friend.on_offline`).
#[derive(Clone, Copy)]
pub struct Hook {
    /// `MODULE.on_online` or `MODULE.on_offline`, as the hook's `Ctx` names its route (for logs
    /// and the module's cache).
    pub path: &'static str,
    /// The hook behind its glue.
    pub run: PresenceHook,
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
        Self::build(vec![ModuleSource::linked()], enabled)
    }

    /// Builds the table a worker config asks for: the linked modules `worker.modules` enables,
    /// and every module of the libraries `worker.dynamic_modules` names, loaded in order.
    ///
    /// # Errors
    /// The first library that does not load ([`LoadError::Library`]), or see [`RouteError`].
    ///
    /// `home` says which modules with documents it may serve: the others are not served, and
    /// naming one in `worker.modules` is an error.
    pub fn for_worker(config: &crate::config::WorkerConfig, home: &DocumentHome) -> Result<Self, LoadError> {
        let mut sources = vec![ModuleSource::linked()];
        for path in &config.dynamic_modules {
            let library = Library::load(path)?;
            sources.push(ModuleSource::library(&library));
            tracing::info!(library = %path.display(), "loaded dynamic module library");
        }
        let mut table = Self::build_for(sources, &config.modules, home)?;
        table.make_public(&config.public_routes);
        table.place_layers(&config.layers)?;
        Ok(table)
    }

    /// Makes the client routes matching `patterns` (`main.sub`, `main.*`) reachable without a
    /// login. A pattern matching no served route is logged: it is likely a typo.
    pub fn make_public(&mut self, patterns: &[String]) {
        for pattern in patterns {
            let (main, sub) = pattern.split_once('.').unwrap_or((pattern, ""));
            let matched: Vec<&'static str> = self
                .routes()
                .filter(|route| route.is_for_clients())
                .filter(|route| {
                    route.module() == main
                        && (sub == "*" || route.path.split_once('.').is_some_and(|(_, s)| s == sub))
                })
                .map(|route| route.path)
                .collect();
            if matched.is_empty() {
                tracing::warn!(pattern = %pattern, "worker.public_routes: the pattern matches no client route this node serves");
            }
            self.public.extend(matched);
        }
    }

    /// Whether a client must be logged in to reach `route`.
    pub fn needs_login(&self, route: &Route) -> bool {
        route.access == Access::Client && !self.public.contains(route.path)
    }

    /// Builds the table from `sources`. `enabled` names the linked modules to serve (empty: all
    /// of them); a library's modules are always served, since naming the library enables them.
    ///
    /// Every route, served or not, is checked: its module exists once, the route exists once,
    /// and its rpc in its origin's protos has the handler's request and reply types.
    ///
    /// # Errors
    /// See [`RouteError`].
    pub fn build(sources: Vec<ModuleSource>, enabled: &[String]) -> Result<Self, RouteError> {
        Self::build_for(sources, enabled, &DocumentHome::Anywhere)
    }

    /// [`RouteTable::build`], serving of the modules that keep documents only those `home`
    /// allows.
    ///
    /// # Errors
    /// See [`RouteError`]; also a module `enabled` names explicitly that `home` does not allow.
    pub fn build_for(
        sources: Vec<ModuleSource>,
        enabled: &[String],
        home: &DocumentHome,
    ) -> Result<Self, RouteError> {
        let mut declared: HashMap<&'static str, (String, Origin, Box<dyn Module>)> = HashMap::new();
        let mut hooks = HashMap::new();
        let mut starts = Vec::new();
        let mut layers: BTreeMap<&'static str, (&'static Layer, String)> = BTreeMap::new();
        for source in &sources {
            for layer in &source.layers {
                let place = source.place(layer.defined_at);
                if let Some((_, first)) = layers.get(layer.name) {
                    return Err(RouteError::DuplicateLayer {
                        name: layer.name,
                        first: first.clone(),
                        second: place,
                    });
                }
                if let Some(pattern) = layer.routes.iter().find(|p| !mortar_abi::layer::is_pattern(p)) {
                    return Err(RouteError::LayerPattern {
                        name: layer.name,
                        defined_at: place,
                        pattern: (*pattern).to_owned(),
                    });
                }
                layers.insert(layer.name, (layer, place));
            }
        }
        let mut tables: BTreeMap<&'static str, (&'static TableDecl, String)> = BTreeMap::new();
        for source in &sources {
            for table in &source.tables {
                let place = source.place(table.defined_at);
                if let Some((_, first)) = tables.get(table.file) {
                    return Err(RouteError::DuplicateTable {
                        file: table.file,
                        first: first.clone(),
                        second: place,
                    });
                }
                tables.insert(table.file, (table, place));
            }
        }
        let mut configs: BTreeMap<&'static str, (&'static ConfigDecl, String)> = BTreeMap::new();
        for source in &sources {
            for config in &source.configs {
                let place = source.place(config.defined_at);
                if let Some((_, first)) = configs.get(config.section) {
                    return Err(RouteError::DuplicateConfig {
                        section: config.section,
                        first: first.clone(),
                        second: place,
                    });
                }
                configs.insert(config.section, (config, place));
            }
        }
        // The modules of each source: a route belongs to a module of its own origin.
        let mut own: Vec<BTreeSet<&'static str>> = Vec::new();
        let mut with_documents: BTreeSet<&'static str> = BTreeSet::new();
        for source in &sources {
            let mut names = BTreeSet::new();
            let document_crates: BTreeSet<&str> =
                source.documents.iter().map(|decl| crate_of(decl.defined_at)).collect();
            for decl in &source.modules {
                let module = (source.build)(decl).map_err(|source_error| RouteError::Build {
                    defined_at: source.place(decl.defined_at),
                    source: source_error,
                })?;
                let name = module.name();
                let place = source.place(decl.defined_at);
                if let Some((first, _, _)) = declared.get(name) {
                    return Err(RouteError::DuplicateModule { name, first: first.clone(), second: place });
                }
                declared.insert(name, (place, source.origin.clone(), module));
                if document_crates.contains(crate_of(decl.defined_at)) {
                    with_documents.insert(name);
                }
                for (status, hook, label) in [
                    (Status::Online, decl.on_online, "on_online"),
                    (Status::Offline, decl.on_offline, "on_offline"),
                ] {
                    if let Some(run) = hook {
                        // Once per module a node enables, for the life of the process.
                        let path: &'static str = Box::leak(format!("{name}.{label}").into_boxed_str());
                        hooks.insert((name, status), Hook { path, run });
                    }
                }
                if let Some(run) = decl.on_start {
                    // Once per module a node enables, for the life of the process.
                    let path: &'static str = Box::leak(format!("{name}.on_start").into_boxed_str());
                    starts.push((path, run));
                }
                names.insert(name);
            }
            own.push(names);
        }
        let linked: BTreeSet<&'static str> = declared
            .iter()
            .filter(|(_, (_, origin, _))| *origin == Origin::Linked)
            .map(|(name, _)| *name)
            .collect();
        for name in enabled {
            if !declared.contains_key(name.as_str()) {
                let available = linked.iter().copied().collect::<Vec<_>>().join(", ");
                return Err(RouteError::UnknownModule { name: name.clone(), available });
            }
        }
        if let DocumentHome::Only(listed) = home
            && let Some(name) = listed.iter().find(|name| !declared.contains_key(name.as_str()))
        {
            let mut available: Vec<&str> = declared.keys().copied().collect();
            available.sort_unstable();
            return Err(RouteError::UnknownHome { name: name.clone(), available: available.join(", ") });
        }
        // A module `enabled` names is served: the home only trims the default of every module.
        let named = |name: &str| enabled.iter().any(|e| e == name);
        let at_home = |name: &str| named(name) || !with_documents.contains(name) || home.allows(name);
        let is_enabled =
            |name: &str| (enabled.is_empty() || !linked.contains(name) || named(name)) && at_home(name);
        let skipped: Vec<&str> = with_documents
            .iter()
            .copied()
            .filter(|name| (enabled.is_empty() || !linked.contains(name)) && !at_home(name))
            .collect();
        if !skipped.is_empty() {
            tracing::info!(
                modules = ?skipped,
                "not serving these modules: they keep documents, and storage.embedded_modules gives them to another worker's embedded store"
            );
        }

        let mut table: foldhash::HashMap<&'static str, foldhash::HashMap<&'static str, &'static Route>> =
            Default::default();
        let mut places: HashMap<&'static str, String> = HashMap::new();
        let mut served_files = BTreeSet::new();
        let mut keyed = BTreeMap::new();
        let mut all = DescriptorPool::new();
        for (source, own) in sources.iter().zip(&own) {
            let pool = mortar_pb::contract(source.protos.iter().copied()).map_err(|error| {
                RouteError::Protos { origin: source.origin.clone(), reason: error.to_string() }
            })?;
            for route in &source.routes {
                let (main, sub) = route.path.split_once('.').unwrap_or((route.path, ""));
                if !own.contains(main) {
                    return Err(RouteError::Orphan {
                        route: route.path,
                        module: main,
                        defined_at: source.place(route.defined_at),
                    });
                }
                let place = source.place(route.defined_at);
                let (file, key) = check_rpc(&pool, route, &place)?;
                if is_enabled(main) {
                    served_files.insert(file);
                    if let Some(field) = key {
                        keyed.insert(route.path, field);
                    }
                }
                let subs = table.entry(main).or_default();
                if subs.insert(sub, route).is_some() {
                    return Err(RouteError::DuplicateRoute {
                        route: route.path,
                        first: places.remove(route.path).unwrap_or_default(),
                        second: place,
                    });
                }
                places.insert(route.path, place);
            }
            for file in pool.files() {
                // Files of other origins with the same name and content are skipped; different
                // content under one name was refused with the origin's own pool above.
                all.add_file_descriptor_proto(file.file_descriptor_proto().clone()).map_err(|error| {
                    RouteError::Protos { origin: source.origin.clone(), reason: error.to_string() }
                })?;
            }
        }
        let mut jobs: BTreeMap<&'static str, (&'static JobDecl, String)> = BTreeMap::new();
        for (source, own) in sources.iter().zip(&own) {
            for job in &source.jobs {
                let place = source.place(job.defined_at);
                let module = job.name.split_once('.').map_or(job.name, |(main, _)| main);
                if !own.contains(module) {
                    return Err(RouteError::OrphanJob { name: job.name, module, defined_at: place });
                }
                if job.every < std::time::Duration::from_secs(1) {
                    return Err(RouteError::JobPeriod {
                        name: job.name,
                        every: job.every,
                        defined_at: place,
                    });
                }
                if let Some((_, first)) = jobs.get(job.name) {
                    return Err(RouteError::DuplicateJob {
                        name: job.name,
                        first: first.clone(),
                        second: place,
                    });
                }
                jobs.insert(job.name, (job, place));
            }
        }
        let jobs = jobs.into_values().map(|(job, _)| job).filter(|job| is_enabled(job.module())).collect();
        table.retain(|main, _| is_enabled(main));
        hooks.retain(|(main, _), _| is_enabled(main));
        starts.retain(|(path, _)| is_enabled(path.split_once('.').map_or(*path, |(main, _)| main)));
        let descriptors = served_set(&all, &served_files);
        let pushes = all
            .services()
            .flat_map(|service| {
                let main = service.name().to_ascii_lowercase();
                // A server-streaming rpc declares a push route; a push may also share a request
                // route and carry its reply type (friend.request does).
                let pushes = service.methods().map(|method| {
                    (
                        format!("{main}.{}", mortar_pb::snake_case(method.name())),
                        method.output().full_name().to_owned(),
                    )
                });
                pushes.collect::<Vec<_>>()
            })
            .collect();
        let documents = with_documents.iter().copied().filter(|name| is_enabled(name)).collect();
        let modules = declared
            .into_iter()
            .filter(|(name, _)| is_enabled(name))
            .map(|(_, (_, origin, module))| (origin, module))
            .collect();
        let mut table = Self {
            routes: table,
            modules,
            descriptors,
            public: Default::default(),
            hooks,
            starts,
            jobs,
            layers,
            chains: Default::default(),
            tables,
            configs,
            documents,
            pushes,
            keyed,
            configured: HashMap::new(),
            loaded_tables: None,
        };
        table.place_layers(&BTreeMap::new())?;
        Ok(table)
    }

    /// Puts each declared layer around the served routes its patterns match: those in `placed`
    /// (`worker.layers`) for the layers it names, those its module gave for the others. A route's
    /// layers run lowest `order` first, then by name.
    ///
    /// # Errors
    /// [`RouteError::UnknownLayer`] for a name in `placed` no module declares.
    pub fn place_layers(&mut self, placed: &BTreeMap<String, Vec<String>>) -> Result<(), RouteError> {
        if let Some(name) = placed.keys().find(|name| !self.layers.contains_key(name.as_str())) {
            let available = self.layers.keys().copied().collect::<Vec<_>>().join(", ");
            return Err(RouteError::UnknownLayer { name: name.clone(), available });
        }
        let mut ordered: Vec<&'static Layer> = self.layers.values().map(|(layer, _)| *layer).collect();
        ordered.sort_by_key(|layer| (layer.order, layer.name));
        let paths: Vec<&'static str> = self.routes().map(|route| route.path).collect();
        self.chains = paths
            .into_iter()
            .filter_map(|path| {
                let chain: Vec<LayerFn> = ordered
                    .iter()
                    .filter(|layer| match placed.get(layer.name) {
                        Some(patterns) => patterns.iter().any(|p| mortar_abi::layer::matches(p, path)),
                        None => layer.routes.iter().any(|p| mortar_abi::layer::matches(p, path)),
                    })
                    .map(|layer| layer.run)
                    .collect();
                (!chain.is_empty()).then(|| (path, chain.into()))
            })
            .collect();
        Ok(())
    }

    /// Gives each declared config section its values from `sections` (the node's
    /// `[modules.*]`), or its defaults when `sections` has none.
    ///
    /// # Errors
    /// A section a module refuses ([`RouteError::Config`]), or one no loaded module reads.
    pub fn configure(&mut self, sections: &BTreeMap<String, serde_json::Value>) -> Result<(), RouteError> {
        if let Some(section) = sections.keys().find(|section| !self.configs.contains_key(section.as_str())) {
            let available = self.configs.keys().copied().collect::<Vec<_>>().join(", ");
            return Err(RouteError::UnknownConfig { section: section.clone(), available });
        }
        let mut configured = HashMap::new();
        for (section, (decl, _)) in &self.configs {
            let json = sections.get(*section).map(serde_json::Value::to_string);
            let values = (decl.load)(json.as_deref())
                .map_err(|reason| RouteError::Config { section: (*section).to_owned(), reason })?;
            configured.insert(*section, values);
        }
        self.configured = configured;
        Ok(())
    }

    /// Config section `section` as [`RouteTable::configure`] read it.
    pub fn config(&self, section: &str) -> Option<mortar_abi::config::Values> {
        self.configured.get(section).cloned()
    }

    /// Loads the game config tables the modules declare from `dir` (see [`Tables::load`]); this
    /// node's handlers read them from then on, also after each reload of the returned
    /// [`Tables`].
    ///
    /// # Errors
    /// Every table refused; then the node has no rows.
    pub fn load_tables(&mut self, dir: PathBuf) -> Result<Tables, TablesError> {
        let tables = Tables::new(dir, self.tables.values().map(|(table, _)| *table));
        tables.load()?;
        self.loaded_tables = Some(tables.clone());
        Ok(tables)
    }

    /// The rows of table `file` this node loaded.
    pub fn table(&self, file: &str) -> Option<mortar_abi::table::Loaded> {
        self.loaded_tables.as_ref()?.rows(file)
    }

    /// The layers route `path` runs through, outermost first; none when it has none.
    pub fn layers_of(&self, path: &str) -> Option<&Arc<[LayerFn]>> {
        self.chains.get(path)
    }

    /// The enabled modules' `on_start` hooks, each with the route its context names.
    pub fn start_hooks(&self) -> &[(&'static str, StartHook)] {
        &self.starts
    }

    /// The enabled modules' scheduled jobs, by name.
    pub fn jobs(&self) -> &[&'static JobDecl] {
        &self.jobs
    }

    /// The route `main.sub`, if an enabled module serves it.
    pub fn get(&self, main: &str, sub: &str) -> Option<&'static Route> {
        self.routes.get(main)?.get(sub).copied()
    }

    /// The route `main.sub` as a client may reach it: internal routes are hidden.
    pub fn get_for_client(&self, main: &str, sub: &str) -> Option<&'static Route> {
        self.get(main, sub).filter(|route| route.is_for_clients())
    }

    /// Why a client cannot reach `main.sub` (for which [`RouteTable::get_for_client`] has no
    /// route): the reason of its `NO_ROUTE`, suggesting the closest module or route a client may
    /// reach when the name looks like a typo.
    pub fn no_route_reason(&self, main: &str, sub: &str) -> String {
        let for_clients = |subs: &foldhash::HashMap<&'static str, &'static Route>| {
            subs.iter().filter(|(_, route)| route.is_for_clients()).map(|(sub, _)| *sub).collect::<Vec<_>>()
        };
        match self.routes.get(main).map(for_clients) {
            Some(subs) if !subs.is_empty() => mortar_cluster::suggest::no_route(main, sub, subs),
            _ => {
                let served = self.routes.iter().filter(|(_, subs)| subs.values().any(|r| r.is_for_clients()));
                mortar_cluster::suggest::no_module(main, served.map(|(main, _)| *main))
            }
        }
    }

    /// The enabled modules.
    pub fn modules(&self) -> impl Iterator<Item = &dyn Module> {
        self.modules.iter().map(|(_, module)| &**module)
    }

    /// The instance enabled module `name` made on this node (see `Ctx::module`).
    pub fn instance(&self, name: &str) -> Option<std::sync::Arc<dyn std::any::Any + Send + Sync>> {
        self.modules.iter().find(|(_, module)| module.name() == name)?.1.instance()
    }

    /// The enabled modules and where each comes from.
    pub fn modules_with_origin(&self) -> impl Iterator<Item = (&Origin, &dyn Module)> {
        self.modules.iter().map(|(origin, module)| (origin, &**module))
    }

    /// The `on_online` or `on_offline` hook (by `status`) of enabled module `module`, if it has
    /// one.
    pub fn hook(&self, module: &str, status: Status) -> Option<Hook> {
        self.hooks.iter().find(|((name, of), _)| *name == module && *of == status).map(|(_, hook)| *hook)
    }

    /// The enabled modules with an `on_online` or `on_offline` hook (by `status`), sorted.
    pub fn hook_modules(&self, status: Status) -> Vec<String> {
        let mut modules: Vec<String> =
            self.hooks.keys().filter(|(_, of)| *of == status).map(|(name, _)| (*name).to_owned()).collect();
        modules.sort_unstable();
        modules
    }

    /// The enabled modules that keep documents (their crate declares a `#[derive(Document)]`
    /// type), sorted.
    pub fn document_modules(&self) -> Vec<String> {
        self.documents.iter().map(|name| (*name).to_owned()).collect()
    }

    /// The served routes routed by a request field, with the field's number, sorted by route.
    pub fn keyed_routes(&self) -> impl Iterator<Item = (&'static str, u32)> + '_ {
        self.keyed.iter().map(|(route, field)| (*route, *field))
    }

    /// The number of the request field served route `path` is routed by, if it is keyed.
    pub fn key_field(&self, path: &str) -> Option<u32> {
        self.keyed.get(path).copied()
    }

    /// Every served route.
    pub fn routes(&self) -> impl Iterator<Item = &'static Route> + '_ {
        self.routes.values().flat_map(|subs| subs.values().copied())
    }

    /// The full name of the message a push on `route` carries, when a loaded proto declares the
    /// route: its rpc's output type.
    pub fn push_message(&self, route: &str) -> Option<&str> {
        self.pushes.get(route).map(String::as_str)
    }

    /// The protos of the served routes (and the files they import), as one encoded
    /// `FileDescriptorSet`: what `sys.descriptors` gives clients.
    pub fn descriptors(&self) -> bytes::Bytes {
        self.descriptors.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use mortar_abi::{
        Code,
        host::Invocation,
        module::{ModuleDecl, Named},
        route::HandlerFuture,
    };
    use std::sync::LazyLock;

    fn handler(_: Invocation, _: Bytes) -> HandlerFuture {
        Box::pin(async { Err(Code::INTERNAL.into()) })
    }

    fn types() -> (String, String) {
        ("synthetic.Msg".into(), "synthetic.Msg".into())
    }

    fn wrong_types() -> (String, String) {
        ("google.protobuf.UInt32Value".into(), "synthetic.Msg".into())
    }

    const fn route(path: &'static str, access: Access, defined_at: &'static str) -> Route {
        Route { path, access, handler, types, defined_at, key: None }
    }

    static SAY: Route = route("echo.say", Access::Client, "a::say");
    static SAY_AGAIN: Route = route("echo.say", Access::Client, "b::say");
    static SECRET: Route = route("echo.secret", Access::Internal, "a::secret");
    static QUERY: Route = route("pack.query", Access::Client, "p::query");
    static UNDECLARED: Route = route("echo.shout", Access::Client, "a::shout");
    static MISTYPED: Route = Route {
        path: "echo.say",
        access: Access::Client,
        handler,
        types: wrong_types,
        defined_at: "a::say",
        key: None,
    };
    static KEYED_BY_NOTHING: Route =
        Route { key: Some("room"), ..route("echo.say", Access::Client, "a::say") };

    static ECHO: ModuleDecl = ModuleDecl {
        build: || Box::new(Named("echo")),
        defined_at: "a",
        on_online: None,
        on_offline: None,
        on_start: None,
    };
    static PACK: ModuleDecl = ModuleDecl {
        build: || Box::new(Named("pack")),
        defined_at: "p",
        on_online: None,
        on_offline: None,
        on_start: None,
    };

    static PROTOS: LazyLock<&'static [u8]> =
        LazyLock::new(|| synthetic_protos(&["echo.say", "echo.secret", "pack.query"]).leak());

    fn source(modules: &[&'static ModuleDecl], routes: &[&'static Route]) -> ModuleSource {
        ModuleSource {
            origin: Origin::Linked,
            modules: modules.to_vec(),
            build: mortar_abi::module::build,
            routes: routes.to_vec(),
            protos: vec![*PROTOS],
            layers: Vec::new(),
            tables: Vec::new(),
            configs: Vec::new(),
            documents: Vec::new(),
            jobs: Vec::new(),
        }
    }

    fn table(
        modules: &[&'static ModuleDecl],
        routes: &[&'static Route],
        enabled: &[String],
    ) -> Result<RouteTable, RouteError> {
        RouteTable::build(vec![source(modules, routes)], enabled)
    }

    fn names(table: &RouteTable) -> Vec<&'static str> {
        let mut names: Vec<_> = table.routes().map(|route| route.path).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn modules_that_keep_documents_are_served_only_at_their_home() {
        use mortar_abi::store::{Collection, DocumentDecl};
        static BAG: DocumentDecl = DocumentDecl {
            collection: || Collection { name: "bag", indexes: &[], sorted: &[] },
            defined_at: "p::store",
        };
        let sources =
            || vec![ModuleSource { documents: vec![&BAG], ..source(&[&ECHO, &PACK], &[&SAY, &QUERY]) }];
        let anywhere = RouteTable::build(sources(), &[]).unwrap();
        assert_eq!(anywhere.document_modules(), ["pack"], "the module of the crate declaring the document");
        assert_eq!(names(&anywhere), ["echo.say", "pack.query"]);

        let elsewhere = DocumentHome::Only(vec!["echo".into()]);
        let table = RouteTable::build_for(sources(), &[], &elsewhere).unwrap();
        assert_eq!(names(&table), ["echo.say"], "pack's documents live on another worker");
        assert!(table.document_modules().is_empty());
        let named = RouteTable::build_for(sources(), &["pack".into()], &elsewhere).unwrap();
        assert_eq!(names(&named), ["pack.query"], "worker.modules naming it wins");

        let typo = DocumentHome::Only(vec!["pakc".into()]);
        let error = RouteTable::build_for(sources(), &[], &typo).err().unwrap();
        assert!(error.to_string().contains("storage.embedded_modules names module `pakc`"), "{error}");
    }

    #[test]
    fn looks_up_by_main_and_sub() {
        let table = table(&[&ECHO, &PACK], &[&SAY, &SECRET, &QUERY], &[]).unwrap();
        assert_eq!(table.get("echo", "say").map(|r| r.defined_at), Some("a::say"));
        assert!(table.get("echo", "shout").is_none());
        assert!(table.get("mail", "say").is_none());
        assert_eq!(names(&table), ["echo.say", "echo.secret", "pack.query"]);
    }

    #[test]
    fn internal_routes_are_hidden_from_clients() {
        let table = table(&[&ECHO], &[&SAY, &SECRET], &[]).unwrap();
        assert!(table.get("echo", "secret").is_some());
        assert!(table.get_for_client("echo", "secret").is_none());
        assert!(table.get_for_client("echo", "say").is_some());
    }

    #[test]
    fn no_route_reasons_suggest_only_what_clients_may_reach() {
        let table = table(&[&ECHO], &[&SAY, &SECRET], &[]).unwrap();
        assert_eq!(
            table.no_route_reason("ecoh", "say"),
            r#"no worker serves module "ecoh" (did you mean "echo"?)"#
        );
        assert_eq!(
            table.no_route_reason("echo", "sya"),
            r#"module "echo" has no route "sya" (did you mean "say"?)"#
        );
        assert_eq!(table.no_route_reason("echo", "secrte"), r#"module "echo" has no route "secrte""#);
    }

    #[test]
    fn serves_only_enabled_modules() {
        let table = table(&[&ECHO, &PACK], &[&SAY, &QUERY], &["pack".into()]).unwrap();
        assert_eq!(names(&table), ["pack.query"]);
        assert_eq!(table.modules().map(|m| m.name()).collect::<Vec<_>>(), ["pack"]);
    }

    #[test]
    fn duplicate_route_names_both_handlers() {
        let error = table(&[&ECHO], &[&SAY, &SAY_AGAIN], &[]).err().unwrap();
        assert_eq!(error.to_string(), "route `echo.say` is declared twice: by a::say and by b::say");
    }

    #[test]
    fn duplicate_module_across_origins_names_both_places() {
        let library = ModuleSource { origin: Origin::Library("libecho.so".into()), ..source(&[&ECHO], &[]) };
        let error = RouteTable::build(vec![source(&[&ECHO], &[]), library], &[]).err().unwrap();
        assert_eq!(error.to_string(), "module `echo` is declared twice: in a and in a (in libecho.so)");
    }

    #[test]
    fn route_without_module_is_refused() {
        let error = table(&[&ECHO], &[&SAY, &QUERY], &[]).err().unwrap();
        assert!(matches!(error, RouteError::Orphan { route: "pack.query", .. }), "{error}");
    }

    fn job(_: Invocation, _: u64) -> mortar_abi::future::BoxFuture<Result<(), mortar_abi::Failure>> {
        Box::pin(async { Ok(()) })
    }

    const fn job_decl(name: &'static str, secs: u64, defined_at: &'static str) -> JobDecl {
        JobDecl { name, every: std::time::Duration::from_secs(secs), run: job, defined_at }
    }

    static TICK: JobDecl = job_decl("echo.tick", 1, "a::tick");
    static TICK_AGAIN: JobDecl = job_decl("echo.tick", 5, "b::tick");
    static FAST: JobDecl = job_decl("echo.fast", 0, "a::fast");
    static STRAY: JobDecl = job_decl("pack.close", 60, "p::close");

    #[test]
    fn jobs_are_served_with_their_module_and_checked() {
        let with = |jobs: &[&'static JobDecl]| ModuleSource {
            jobs: jobs.to_vec(),
            ..source(&[&ECHO, &PACK], &[&SAY])
        };
        let table = RouteTable::build(vec![with(&[&TICK])], &[]).unwrap();
        assert_eq!(table.jobs().iter().map(|job| job.name).collect::<Vec<_>>(), ["echo.tick"]);
        let table = RouteTable::build(vec![with(&[&TICK])], &["pack".into()]).unwrap();
        assert!(table.jobs().is_empty(), "a job runs only where its module is enabled");

        let error = RouteTable::build(vec![with(&[&TICK, &TICK_AGAIN])], &[]).err().unwrap();
        assert_eq!(error.to_string(), "job `echo.tick` is declared twice: in a::tick and in b::tick");
        let error = RouteTable::build(vec![with(&[&FAST])], &[]).err().unwrap();
        assert!(error.to_string().contains("the shortest period is one second"), "{error}");
        let error = RouteTable::build(
            vec![source(&[&ECHO], &[]), ModuleSource { jobs: vec![&STRAY], ..source(&[], &[]) }],
            &[],
        )
        .err()
        .unwrap();
        assert!(matches!(error, RouteError::OrphanJob { name: "pack.close", .. }), "{error}");
    }

    #[test]
    fn a_library_cannot_add_routes_to_a_module_of_another_origin() {
        let library =
            ModuleSource { origin: Origin::Library("libextra.so".into()), ..source(&[], &[&SECRET]) };
        let error = RouteTable::build(vec![source(&[&ECHO], &[&SAY]), library], &[]).err().unwrap();
        assert!(matches!(error, RouteError::Orphan { route: "echo.secret", .. }), "{error}");
    }

    #[test]
    fn unknown_enabled_module_lists_the_available_ones() {
        let error = table(&[&ECHO, &PACK], &[], &["mail".into()]).err().unwrap();
        assert_eq!(
            error.to_string(),
            "config enables module `mail`, which this binary does not have (it has: echo, pack)"
        );
    }

    #[test]
    fn a_route_without_its_rpc_is_refused_with_the_line_to_add() {
        let error = table(&[&ECHO], &[&UNDECLARED], &[]).err().unwrap();
        assert_eq!(
            error.to_string(),
            "route `echo.shout` (defined at a::shout) has no rpc: add `rpc Shout(...)` to `service Echo` in its module's .proto"
        );
    }

    #[test]
    fn a_handler_whose_types_differ_from_its_rpc_is_refused_with_both() {
        let error = table(&[&ECHO], &[&MISTYPED], &[]).err().unwrap();
        assert_eq!(
            error.to_string(),
            "route `echo.say` (defined at a::say): the handler takes `google.protobuf.UInt32Value` and returns `synthetic.Msg`, but its rpc `synthetic.Echo.Say` takes `synthetic.Msg` and returns `synthetic.Msg`"
        );
    }

    #[test]
    fn a_route_keyed_by_a_field_its_request_lacks_is_refused() {
        let error = table(&[&ECHO], &[&KEYED_BY_NOTHING], &[]).err().unwrap();
        assert_eq!(
            error.to_string(),
            "route `echo.say` (defined at a::say) is routed by `key = room`, but its request `synthetic.Msg` has no single string, bytes or integer field `room`"
        );
        let served = table(&[&ECHO], &[&SAY], &[]).unwrap();
        assert_eq!(served.keyed_routes().count(), 0);
    }

    fn pass(
        invocation: Invocation,
        body: bytes::Bytes,
        next: mortar_abi::layer::Next,
    ) -> mortar_abi::route::HandlerFuture {
        next.run(invocation, body)
    }
    static TIMING: Layer = Layer { name: "timing", routes: &["*"], order: 5, run: pass, defined_at: "t" };
    static AUDIT: Layer = Layer { name: "audit", routes: &["pack.*"], order: 5, run: pass, defined_at: "u" };
    static BAD: Layer = Layer { name: "bad", routes: &["Pack"], order: 0, run: pass, defined_at: "b" };

    fn with_layers(layers: &[&'static Layer]) -> Result<RouteTable, RouteError> {
        let source = ModuleSource { layers: layers.to_vec(), ..source(&[&ECHO, &PACK], &[&SAY, &QUERY]) };
        RouteTable::build(vec![source], &[])
    }

    #[test]
    fn layers_wrap_the_routes_their_patterns_match_and_the_config_moves_them() {
        let mut table = with_layers(&[&TIMING, &AUDIT]).unwrap();
        assert_eq!(table.layers_of("pack.query").map(|chain| chain.len()), Some(2));
        assert_eq!(table.layers_of("echo.say").map(|chain| chain.len()), Some(1));
        let placed = BTreeMap::from([
            ("timing".to_owned(), vec![]),
            ("audit".to_owned(), vec!["echo.say".to_owned()]),
        ]);
        table.place_layers(&placed).unwrap();
        assert!(table.layers_of("pack.query").is_none());
        assert_eq!(table.layers_of("echo.say").map(|chain| chain.len()), Some(1));
        let unknown = BTreeMap::from([("timng".to_owned(), vec![])]);
        let error = table.place_layers(&unknown).unwrap_err().to_string();
        assert!(error.contains("`timng`") && error.contains("audit, timing"), "{error}");
    }

    #[test]
    fn duplicate_layers_and_bad_patterns_are_refused() {
        let error = with_layers(&[&TIMING, &TIMING]).err().unwrap().to_string();
        assert!(error.contains("layer `timing` is declared twice: in t and in t"), "{error}");
        let error = with_layers(&[&BAD]).err().unwrap().to_string();
        assert!(error.contains("`Pack`"), "{error}");
    }

    fn load_knobs(json: Option<&str>) -> Result<mortar_abi::config::Values, String> {
        match json {
            Some(json) if json.contains("bad") => Err("size: bad value".into()),
            json => Ok(Arc::new(json.unwrap_or("defaults").to_owned())),
        }
    }
    static KNOBS: ConfigDecl = ConfigDecl { section: "knobs", load: load_knobs, defined_at: "k" };

    #[test]
    fn config_sections_go_to_their_module_and_unknown_ones_are_refused() {
        let with_knobs = ModuleSource { configs: vec![&KNOBS], ..source(&[&ECHO], &[&SAY]) };
        let mut table = RouteTable::build(vec![with_knobs], &[]).unwrap();
        let knobs = |table: &RouteTable| table.config("knobs").map(|any| any.downcast::<String>().unwrap());
        assert_eq!(knobs(&table), None, "not read yet");
        table.configure(&BTreeMap::new()).unwrap();
        assert_eq!(knobs(&table).as_deref().map(String::as_str), Some("defaults"));
        let good = BTreeMap::from([("knobs".to_owned(), serde_json::json!({"size": 3}))]);
        table.configure(&good).unwrap();
        assert_eq!(knobs(&table).as_deref().map(String::as_str), Some(r#"{"size":3}"#));
        let bad = BTreeMap::from([("knobs".to_owned(), serde_json::json!({"size": "bad"}))]);
        assert_eq!(table.configure(&bad).unwrap_err().to_string(), "modules.knobs: size: bad value");
        let unknown = BTreeMap::from([("knbos".to_owned(), serde_json::json!({}))]);
        let error = table.configure(&unknown).unwrap_err().to_string();
        assert_eq!(error, "modules.knbos: no loaded module reads this section (sections: knobs)");
        let twice = ModuleSource { configs: vec![&KNOBS, &KNOBS], ..source(&[&ECHO], &[&SAY]) };
        assert!(RouteTable::build(vec![twice], &[]).is_err());
    }

    #[test]
    fn a_library_module_is_served_even_when_the_config_names_others() {
        let library =
            ModuleSource { origin: Origin::Library("libpack.so".into()), ..source(&[&PACK], &[&QUERY]) };
        let table = RouteTable::build(vec![source(&[&ECHO], &[&SAY]), library], &["echo".into()]).unwrap();
        assert_eq!(names(&table), ["echo.say", "pack.query"]);
    }

    #[test]
    fn descriptors_hold_the_served_files_only() {
        use prost::Message as _;
        use prost_reflect::prost_types::FileDescriptorSet;
        let table = table(&[&ECHO], &[&SAY], &[]).unwrap();
        let set = FileDescriptorSet::decode(table.descriptors()).unwrap();
        let files: Vec<_> = set.file.iter().filter_map(|file| file.name.as_deref()).collect();
        assert_eq!(files, ["synthetic.proto"], "mortar.proto is the client's own");
    }
}
