//! The module catalog: where each module, route, layer, table, config section and document type a
//! node may serve comes from (linked into the binary, or a library), and which modules keep their
//! documents on this node.

use crate::library::Library;
use mortar_abi::{
    config::ConfigDecl,
    job::JobDecl,
    layer::Layer,
    module::Module,
    module::{ModuleDecl, ModuleError},
    route::Route,
    store::DocumentDecl,
    table::TableDecl,
};
use std::{fmt, path::PathBuf};

/// Where a module comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Linked into this binary.
    Linked,
    /// Loaded from this shared library.
    Library(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Linked => f.write_str("this binary"),
            Self::Library(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The modules, routes and protos of one origin: this binary or one library.
pub struct ModuleSource {
    /// Where they come from.
    pub origin: Origin,
    /// The modules.
    pub modules: Vec<&'static ModuleDecl>,
    /// Makes a module: the SDK's [`mortar_abi::module::build`] of the origin's own copy of the SDK.
    pub build: fn(&ModuleDecl) -> Result<Box<dyn Module>, ModuleError>,
    /// The routes.
    pub routes: Vec<&'static Route>,
    /// The encoded descriptor sets of the origin's protos.
    pub protos: Vec<&'static [u8]>,
    /// The layers.
    pub layers: Vec<&'static Layer>,
    /// The game config tables.
    pub tables: Vec<&'static TableDecl>,
    /// The modules' config sections.
    pub configs: Vec<&'static ConfigDecl>,
    /// The document types: the modules of their crates keep documents.
    pub documents: Vec<&'static DocumentDecl>,
    /// The scheduled jobs.
    pub jobs: Vec<&'static JobDecl>,
}

/// Which modules that keep documents a node may serve.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DocumentHome {
    /// Any: the node's store is the cluster's (MongoDB), or the node is alone (`mortar dev`).
    #[default]
    Anywhere,
    /// Only these (`storage.embedded_modules` with the embedded store): the others keep their
    /// documents in another worker's store.
    Only(Vec<String>),
}

impl DocumentHome {
    /// The home the `[storage]` section gives a cluster worker.
    pub fn of(storage: &mortar_backends::config::StorageConfig) -> Self {
        match (storage.url.as_str(), storage.embedded_modules.is_empty()) {
            ("embedded", false) => Self::Only(storage.embedded_modules.clone()),
            _ => Self::Anywhere,
        }
    }

    pub(super) fn allows(&self, module: &str) -> bool {
        match self {
            Self::Anywhere => true,
            Self::Only(listed) => listed.iter().any(|name| name == module),
        }
    }
}

/// The crate of a `module_path!()`.
pub(super) fn crate_of(path: &str) -> &str {
    path.split("::").next().unwrap_or(path)
}

impl ModuleSource {
    /// Everything linked into this program.
    pub fn linked() -> Self {
        Self {
            origin: Origin::Linked,
            modules: mortar_abi::module::registered().collect(),
            build: mortar_abi::module::build,
            routes: mortar_abi::route::registered().collect(),
            protos: mortar_abi::module::protos().map(|protos| protos.descriptors).collect(),
            layers: mortar_abi::layer::registered().collect(),
            tables: mortar_abi::table::registered().collect(),
            configs: mortar_abi::config::registered().collect(),
            documents: mortar_abi::store::registered().collect(),
            jobs: mortar_abi::job::registered().collect(),
        }
    }

    /// What a loaded library declares.
    pub fn library(library: &Library) -> Self {
        let declaration = library.declaration();
        Self {
            origin: Origin::Library(library.path().to_owned()),
            modules: declaration.modules.clone(),
            build: declaration.build,
            routes: declaration.routes.clone(),
            protos: declaration.protos.iter().map(|protos| protos.descriptors).collect(),
            layers: declaration.layers.clone(),
            tables: declaration.tables.clone(),
            configs: declaration.configs.clone(),
            documents: declaration.documents.clone(),
            jobs: declaration.jobs.clone(),
        }
    }

    pub(super) fn place(&self, defined_at: &str) -> String {
        match &self.origin {
            Origin::Linked => defined_at.to_owned(),
            Origin::Library(path) => format!("{defined_at} (in {})", path.display()),
        }
    }
}
