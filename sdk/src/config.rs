//! A module's own config section: `[modules.<section>]` in the node's config file (or
//! `MORTAR_MODULES__<SECTION>__<KEY>`), typed in Rust, checked when the node starts.
//!
//! ```
//! use mortar::Ctx;
//!
//! /// `[modules.lobby]`
//! #[derive(serde::Deserialize)]
//! #[serde(default, deny_unknown_fields)]
//! pub struct LobbyConfig {
//!     /// Players per room.
//!     pub room_size: u32,
//! }
//!
//! impl Default for LobbyConfig {
//!     fn default() -> Self {
//!         Self { room_size: 8 }
//!     }
//! }
//!
//! fn check(config: &LobbyConfig) -> Result<(), String> {
//!     if (2..=64).contains(&config.room_size) { Ok(()) } else { Err("room_size must be 2-64".into()) }
//! }
//!
//! mortar::config!(LobbyConfig, section = "lobby", check = check);
//!
//! fn room_size(ctx: &Ctx) -> u32 {
//!     ctx.config::<LobbyConfig>().room_size
//! }
//! ```
//!
//! The values belong to the node: each node reads its own config when it starts (two nodes in one
//! process, as in tests, each have theirs), and [`Ctx::config`](crate::Ctx::config) reads the
//! values of the node that runs the request. A section the node's config does not have gives the
//! type's `Default`. An unknown key (with `deny_unknown_fields`), a value of the wrong type or one
//! `check` refuses stops the node's start with the section, key and reason; so does a
//! `[modules.X]` section no loaded module reads.

use serde::de::DeserializeOwned;
use std::sync::Arc;

pub use mortar_abi::config::{ConfigDecl, Values, registered};

/// A module's config type, as [`config!`](crate::config!) declares it.
pub trait Config: DeserializeOwned + Default + Send + Sync + 'static {
    /// The section's name: `[modules.<SECTION>]`.
    const SECTION: &'static str;

    /// Checks values beyond their type.
    ///
    /// # Errors
    /// Why they are refused.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Decodes and checks section `T` given as JSON (none: the defaults): the values a node keeps for
/// [`Ctx::config`](crate::Ctx::config), as the module's own type behind `Any` (made and read
/// on the module's side of a library boundary, so its type is the module's own).
///
/// # Errors
/// Why the section is refused: a key or value serde refuses, or `check`'s reason.
pub fn decode<T: Config>(json: Option<&str>) -> Result<Values, String> {
    let values: T = match json {
        Some(json) => serde_json::from_str(json).map_err(|error| describe(json, &error))?,
        None => T::default(),
    };
    values.check()?;
    Ok(Arc::new(values))
}

/// serde's reason for refusing `json`, led by the key it was reading (`close_grace_ms: invalid
/// type: …`) rather than followed by a position in `json`, which is the node's internal form of
/// the section and means nothing to whoever wrote the file.
fn describe(json: &str, error: &serde_json::Error) -> String {
    let text = error.to_string();
    let reason = text.rfind(" at line ").map_or(text.as_str(), |at| &text[..at]);
    if reason.starts_with("unknown field") || reason.starts_with("missing field") {
        return reason.to_owned();
    }
    // The key whose value was being read: the last `"key":` before the error's column.
    let read = json.get(..error.column().min(json.len())).unwrap_or(json);
    let key = read.rfind("\":").and_then(|end| {
        let start = read[..end].rfind('"')?;
        Some(&read[start + 1..end])
    });
    match key {
        Some(key) => format!("{key}: {reason}"),
        None => reason.to_owned(),
    }
}

/// Declares a module's config type (see the [module docs](self)):
/// `mortar::config!(LobbyConfig, section = "lobby");`, optionally `check = f` (a
/// `fn(&T) -> Result<(), String>`).
#[macro_export]
macro_rules! config {
    ($config:ty, section = $section:literal $(, check = $check:path)? $(,)?) => {
        const _: () = {
            impl $crate::config::Config for $config {
                const SECTION: &'static str = $section;
                $(
                    fn check(&self) -> ::std::result::Result<(), ::std::string::String> {
                        $check(self)
                    }
                )?
            }
            $crate::inventory::submit! {
                $crate::config::ConfigDecl {
                    section: $section,
                    load: $crate::config::decode::<$config>,
                    defined_at: module_path!(),
                }
            }
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Knobs {
        size: u32,
    }

    impl Default for Knobs {
        fn default() -> Self {
            Self { size: 3 }
        }
    }

    fn positive(knobs: &Knobs) -> Result<(), String> {
        if knobs.size == 0 { Err("size must be at least 1".into()) } else { Ok(()) }
    }

    crate::config!(Knobs, section = "knobs", check = positive);

    #[test]
    fn a_section_is_decoded_checked_or_defaulted() {
        let size = |json| decode::<Knobs>(json).map(|any| any.downcast::<Knobs>().unwrap().size);
        assert_eq!(size(Some(r#"{"size": 9}"#)), Ok(9));
        assert_eq!(size(None), Ok(3), "no section: the defaults");
        let unknown = size(Some(r#"{"sise": 9}"#)).unwrap_err();
        assert!(unknown.contains("unknown field `sise`"), "{unknown}");
        assert_eq!(size(Some(r#"{"size": 0}"#)), Err("size must be at least 1".into()));
    }
}
