//! The build-script side of a module crate (feature `build`): compiles the crate's `proto/`
//! folder with protox (pure Rust: no system `protoc`) and prost-build.
//!
//! A module crate's `build.rs` is one call:
//!
//! ```no_run
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     mortar::build::compile_protos()
//! }
//! ```
//!
//! and its `src/lib.rs` includes each package with [`include_proto!`](crate::include_proto).

use prost_types::FileDescriptorSet;
use protox::prost::Message as _;
use std::{
    collections::BTreeSet,
    error::Error,
    path::{Path, PathBuf},
};

/// The file, in `OUT_DIR`, holding the encoded descriptor set of a crate's protos.
pub const DESCRIPTOR_FILE: &str = "mortar_protos.bin";

/// Compiles every `proto/*.proto` of the crate being built: one Rust file per package in
/// `OUT_DIR` (for [`include_proto!`](crate::include_proto)) and the descriptor set the crate
/// registers with its routes, so a node checks each route against its rpc and clients can encode
/// JSON for it. [`Protos`] does the same with another folder or other modules' protos.
///
/// # Errors
/// When `proto/` cannot be read, holds no `.proto` file, or a file does not compile (the error
/// names the file, line and reason).
pub fn compile_protos() -> Result<(), Box<dyn Error>> {
    Protos::new().compile()
}

/// [`compile_protos`] for another folder, relative to the crate's manifest.
///
/// # Errors
/// As [`compile_protos`].
pub fn compile_protos_in(dir: impl AsRef<Path>) -> Result<(), Box<dyn Error>> {
    Protos::new().dir(dir).compile()
}

/// What a module crate's build script compiles: its own proto folder (`proto/` unless
/// [`dir`](Self::dir) says otherwise) and the proto folders of other modules it calls
/// ([`import`](Self::import)).
///
/// For each package, the Rust file holds the messages and, per service, a typed client: for
/// `service User { rpc Lookup(LookupReq) returns (LookupResp); }` a `UserClient(&ctx)` whose
/// `lookup(&req)` calls route `user.lookup` and answers a `LookupResp` (push rpcs, which stream,
/// have no method). It calls through any [`Caller`](crate::Caller): a `Ctx` in a module, a test
/// player of `mortar_testing` in a test. A crate calling another module imports
/// that module's folder and includes its package with [`import_proto!`](crate::import_proto),
/// which does not register it: the module's own crate does, where it is served.
///
/// ```no_run
/// // build.rs of a module calling `user.lookup`.
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     mortar::build::Protos::new().import("../user/proto").compile()
/// }
/// ```
///
/// Messages of one package may name those of another (`import "user.proto";`, then
/// `user.Player`): the generated code finds package `a.b` at `crate::a::b`, so a crate mounts
/// each package it includes at its root under the package's name (`pub mod user { … }`).
#[derive(Clone, Debug)]
pub struct Protos {
    dir: PathBuf,
    imports: Vec<PathBuf>,
}

impl Default for Protos {
    fn default() -> Self {
        Self::new()
    }
}

impl Protos {
    /// The crate's `proto/` folder, no imports.
    pub fn new() -> Self {
        Self { dir: PathBuf::from("proto"), imports: Vec::new() }
    }

    /// The crate's own protos are in `dir` (relative to the crate's manifest) instead of `proto/`.
    #[must_use]
    pub fn dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.dir = dir.as_ref().to_owned();
        self
    }

    /// Another module's proto folder (relative to the crate's manifest, e.g. `../user/proto`):
    /// its packages get Rust types and typed clients, and the crate's own files may `import` its
    /// files by name.
    #[must_use]
    pub fn import(mut self, dir: impl AsRef<Path>) -> Self {
        self.imports.push(dir.as_ref().to_owned());
        self
    }

    /// Compiles: checks the crate's own files as Google's `protoc` would (with it, when there is
    /// one), writes the descriptor set of the own files (and what they import) that
    /// [`include_proto!`](crate::include_proto) registers, and one Rust file per package of the
    /// own and the imported folders.
    ///
    /// # Errors
    /// When a folder cannot be read, the own folder holds no `.proto` file, or a file does not
    /// compile (the error names the file, line and reason).
    pub fn compile(self) -> Result<(), Box<dyn Error>> {
        let includes: Vec<&Path> =
            std::iter::once(self.dir.as_path()).chain(self.imports.iter().map(PathBuf::as_path)).collect();
        for dir in &includes {
            println!("cargo:rerun-if-changed={}", dir.display());
        }
        let files = proto_files(&self.dir)?;
        if files.is_empty() {
            return Err(format!("{} holds no .proto file", self.dir.display()).into());
        }
        for file in &files {
            let path = self.dir.join(file);
            let text = std::fs::read_to_string(&path)?;
            if let Some(problem) = crate::proto_check::protoc_refuses(&text) {
                return Err(format!("{}:{problem}", path.display()).into());
            }
        }
        let descriptors = protox::compile(&files, &includes)?;
        run_protoc(&includes, &files)?;
        let out = PathBuf::from(std::env::var("OUT_DIR")?);
        std::fs::write(out.join(DESCRIPTOR_FILE), descriptors.encode_to_vec())?;
        let mut every = files;
        for dir in &self.imports {
            every.extend(proto_files(dir)?);
        }
        every.sort();
        every.dedup();
        generate(protox::compile(&every, &includes)?, &out)
    }
}

/// The `.proto` files of `dir`, relative to it, sorted.
fn proto_files(dir: &Path) -> Result<Vec<PathBuf>, Box<dyn Error>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "proto") {
            files.push(PathBuf::from(path.strip_prefix(dir)?));
        }
    }
    files.sort();
    Ok(files)
}

/// Writes `PACKAGE.rs` for each package of `set` into `out`, a package's references to another
/// naming it at `crate::…`.
fn generate(set: FileDescriptorSet, out: &Path) -> Result<(), Box<dyn Error>> {
    let module = |package: &str| prost_build::Module::from_protobuf_package_name(package);
    let packages: BTreeSet<String> = set.file.iter().map(|file| file.package().to_owned()).collect();
    let requests: Vec<_> = set.file.into_iter().map(|file| (module(file.package()), file)).collect();
    for package in &packages {
        let mut config = prost_build::Config::new();
        // Generated code names prost through the SDK: a module crate depends on `mortar` only.
        config
            .prost_path("::mortar::prost")
            .bytes(["."])
            .enable_type_names()
            .service_generator(Box::new(Clients));
        for other in packages.iter().filter(|other| *other != package) {
            let path = module(other).parts().collect::<Vec<_>>().join("::");
            config.extern_path(format!(".{other}"), format!("crate::{path}"));
        }
        let mut generated = config.generate(requests.clone())?;
        let name = module(package);
        if let Some(code) = generated.remove(&name) {
            let file = out.join(name.to_file_name_or("_"));
            if std::fs::read(&file).ok().as_deref() != Some(code.as_bytes()) {
                std::fs::write(file, code)?;
            }
        }
    }
    Ok(())
}

/// Generates a typed client per service: `NameClient(&ctx)` with a method per request rpc.
struct Clients;

impl prost_build::ServiceGenerator for Clients {
    fn generate(&mut self, service: prost_build::Service, buf: &mut String) {
        use std::fmt::Write as _;
        let (main, name) = (service.proto_name.to_ascii_lowercase(), &service.name);
        let _ = write!(
            buf,
            r"
/// Calls the routes of module `{main}` (service `{proto}`) with their types, through a
/// [`Caller`](::mortar::Caller): `{name}Client(&ctx)` in a module (the deadline, trace and caller
/// are the context's), `{name}Client(&player)` in a test.
pub struct {name}Client<'a, C: ?Sized = ::mortar::Ctx>(pub &'a C);

impl<C: ::mortar::Caller + ?Sized> {name}Client<'_, C> {{
",
            proto = service.proto_name,
        );
        let requests =
            service.methods.iter().filter(|method| !method.server_streaming && !method.client_streaming);
        for method in requests {
            let route = format!("{main}.{}", mortar_pb::snake_case(&method.proto_name));
            let _ = writeln!(buf, "    /// Calls `{route}`.");
            if !method.comments.leading.is_empty() {
                buf.push_str("    ///\n");
                for line in method.comments.leading.iter().flat_map(|comment| comment.lines()) {
                    let _ = writeln!(buf, "    ///{line}");
                }
            }
            let _ = write!(
                buf,
                r#"    ///
    /// # Errors
    /// As the caller's [`call`](::mortar::Caller::call).
    pub async fn {rust}(&self, req: &{input}) -> ::core::result::Result<{output}, C::Error> {{
        self.0.call("{route}", req).await
    }}
"#,
                rust = method.name,
                input = method.input_type,
                output = method.output_type,
            );
        }
        buf.push_str("}\n");
    }
}

/// Runs Google's `protoc` on `files` when there is one (`MORTAR_PROTOC`, or `protoc` on the
/// `PATH`), as client authors will: a file it refuses fails the build with its message. Without
/// one, `protoc_refuses` has checked what protox and `protoc` are known to disagree on.
fn run_protoc(includes: &[&Path], files: &[PathBuf]) -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-env-changed=MORTAR_PROTOC");
    let protoc =
        std::env::var_os("MORTAR_PROTOC").filter(|path| !path.is_empty()).map(PathBuf::from).or_else(|| {
            let paths = std::env::var_os("PATH")?;
            std::env::split_paths(&paths).map(|dir| dir.join("protoc")).find(|path| path.is_file())
        });
    let Some(protoc) = protoc else { return Ok(()) };
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("protoc-check.bin");
    let output = std::process::Command::new(&protoc)
        .args(includes.iter().map(|dir| format!("-I{}", dir.display())))
        .arg(format!("--descriptor_set_out={}", out.display()))
        .args(files)
        .output()
        .map_err(|error| format!("cannot run {}: {error}", protoc.display()))?;
    if !output.status.success() {
        return Err(format!(
            "Google's protoc ({}) refuses the protos in {}, as it would for a client author:\n{}",
            protoc.display(),
            includes[0].display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    Ok(())
}
