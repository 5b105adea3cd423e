//! Why a route table, or a worker's modules, could not be loaded.

use super::Origin;
use mortar_abi::module::ModuleError;

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
        first: String,
        /// Where the second handler is defined.
        second: String,
    },
    /// A route's `key = field` names no field its request can be routed by.
    #[error(
        "route `{route}` (defined at {defined_at}) is routed by `key = {field}`, but its request `{message}` has no single string, bytes or integer field `{field}`"
    )]
    Key {
        /// The route.
        route: &'static str,
        /// Where its handler is defined.
        defined_at: String,
        /// The field it names.
        field: &'static str,
        /// Its request type.
        message: String,
    },
    /// Two modules share a name.
    #[error("module `{name}` is declared twice: in {first} and in {second}")]
    DuplicateModule {
        /// The name.
        name: &'static str,
        /// Where the first module is declared.
        first: String,
        /// Where the second module is declared.
        second: String,
    },
    /// A route's `main` names no module declared beside it (in this binary, or in the same
    /// library).
    #[error(
        "route `{route}` (defined at {defined_at}) belongs to no module: declare `mortar::module!(\"{module}\")` in its crate"
    )]
    Orphan {
        /// The route.
        route: &'static str,
        /// Its module part.
        module: &'static str,
        /// Where its handler is defined.
        defined_at: String,
    },
    /// A job's module part names no module declared beside it.
    #[error(
        "job `{name}` (defined at {defined_at}) belongs to no module: its name is `MODULE.NAME`, and `mortar::module!(\"{module}\")` must be declared in its crate"
    )]
    OrphanJob {
        /// The job.
        name: &'static str,
        /// Its module part.
        module: &'static str,
        /// Where it is declared.
        defined_at: String,
    },
    /// A job's period is shorter than a second.
    #[error("job `{name}` (defined at {defined_at}) runs every {every:?}: the shortest period is one second")]
    JobPeriod {
        /// The job.
        name: &'static str,
        /// Its period.
        every: std::time::Duration,
        /// Where it is declared.
        defined_at: String,
    },
    /// Two jobs share a name.
    #[error("job `{name}` is declared twice: in {first} and in {second}")]
    DuplicateJob {
        /// The job.
        name: &'static str,
        /// Where it is declared first.
        first: String,
        /// Where it is declared again.
        second: String,
    },
    /// Two layers share a name.
    #[error("layer `{name}` is declared twice: in {first} and in {second}")]
    DuplicateLayer {
        /// The name.
        name: &'static str,
        /// Where the first is declared.
        first: String,
        /// Where the second is declared.
        second: String,
    },
    /// Two modules declare one config section.
    #[error("config section `modules.{section}` is declared twice: in {first} and in {second}")]
    DuplicateConfig {
        /// The section.
        section: &'static str,
        /// Where the first is declared.
        first: String,
        /// Where the second is declared.
        second: String,
    },
    /// A module's config section is refused.
    #[error("modules.{section}: {reason}")]
    Config {
        /// The section.
        section: String,
        /// What is wrong (from the module).
        reason: String,
    },
    /// The node's config has a section no loaded module reads.
    #[error("modules.{section}: no loaded module reads this section (sections: {available})")]
    UnknownConfig {
        /// The section.
        section: String,
        /// The sections declared, comma-separated.
        available: String,
    },
    /// Two tables read one file.
    #[error("table `{file}` is declared twice: in {first} and in {second}")]
    DuplicateTable {
        /// The file's name without `.json`.
        file: &'static str,
        /// Where the first is declared.
        first: String,
        /// Where the second is declared.
        second: String,
    },
    /// A layer's route pattern is not `*`, `main.*` or `main.sub`.
    #[error(
        "layer `{name}` (declared in {defined_at}): route pattern `{pattern}` is not `*`, `main.*` or `main.sub`"
    )]
    LayerPattern {
        /// The layer.
        name: &'static str,
        /// Where it is declared.
        defined_at: String,
        /// The pattern.
        pattern: String,
    },
    /// The config places a layer no module declares.
    #[error("worker.layers names layer `{name}`, which no loaded module declares (declared: {available})")]
    UnknownLayer {
        /// The name in the config.
        name: String,
        /// The layers declared, comma-separated.
        available: String,
    },
    /// The config enables a module that is not linked into this binary.
    #[error("config enables module `{name}`, which this binary does not have (it has: {available})")]
    UnknownModule {
        /// The name in the config.
        name: String,
        /// The modules this binary has, comma-separated.
        available: String,
    },
    /// `storage.embedded_modules` names a module this node does not have.
    #[error(
        "storage.embedded_modules names module `{name}`, which this node does not have (it has: {available})"
    )]
    UnknownHome {
        /// The name in the config.
        name: String,
        /// The modules this node has, comma-separated.
        available: String,
    },
    /// A module's constructor failed.
    #[error("module declared in {defined_at} cannot be made: {source}")]
    Build {
        /// Where it is declared.
        defined_at: String,
        /// What went wrong.
        #[source]
        source: ModuleError,
    },
    /// The protos of an origin do not form one contract.
    #[error("the protos of {origin} do not load: {reason}")]
    Protos {
        /// Where they come from.
        origin: Origin,
        /// What prost-reflect said.
        reason: String,
    },
    /// A route has no rpc in its module's protos.
    #[error(
        "route `{route}` (defined at {defined_at}) has no rpc: add `rpc {method}(...)` to `service {service}` in its module's .proto"
    )]
    NoRpc {
        /// The route.
        route: &'static str,
        /// Where its handler is defined.
        defined_at: String,
        /// The service it belongs in.
        service: String,
        /// The rpc's expected name.
        method: String,
    },
    /// A handler's request or reply type differs from its rpc's.
    #[error("route `{route}` (defined at {defined_at}): {mismatch}")]
    Types {
        /// The route.
        route: &'static str,
        /// Where its handler is defined.
        defined_at: String,
        /// Both pairs of types: "the handler takes `A` and returns `B`, but its rpc …".
        mismatch: String,
    },
}

/// Why a worker's modules could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A library was refused.
    #[error(transparent)]
    Library(#[from] crate::library::LibraryError),
    /// The modules do not form a route table.
    #[error(transparent)]
    Routes(#[from] RouteError),
}
