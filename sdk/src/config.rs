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
//! The values live in the module's own static: one per process (two nodes in one process, as in
//! tests, share them). A section the node's config does not have gives the type's `Default`. An unknown key (with
//! `deny_unknown_fields`), a value of the wrong type or one `check` refuses stops the node's start
//! with the section, key and reason; so does a `[modules.X]` section no loaded module reads.

use serde::de::DeserializeOwned;
use std::sync::{Arc, PoisonError, RwLock};

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

    /// Where the node's values are kept.
    fn slot() -> &'static Slot<Self>;
}

/// Where a module's config values are kept once the node read them.
pub struct Slot<T> {
    current: RwLock<Option<Arc<T>>>,
}

impl<T: Config> Slot<T> {
    /// Nothing read yet (the values are `T::default()` until the node reads its config).
    #[doc(hidden)]
    pub const fn new() -> Self {
        Self { current: RwLock::new(None) }
    }

    /// The values.
    pub fn get(&self) -> Arc<T> {
        if let Some(current) = self.current.read().unwrap_or_else(PoisonError::into_inner).as_ref() {
            return current.clone();
        }
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        current.get_or_insert_with(|| Arc::new(T::default())).clone()
    }

    /// Decodes and checks the section given as JSON (none: the defaults) and keeps it.
    #[doc(hidden)]
    pub fn load(&self, json: Option<&str>) -> Result<(), String> {
        let values: T = match json {
            Some(json) => serde_json::from_str(json).map_err(|error| error.to_string())?,
            None => T::default(),
        };
        values.check()?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(values));
        Ok(())
    }
}

impl<T: Config> Default for Slot<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// A config section as [`config!`](crate::config!) registers it, for the node to fill.
#[derive(Debug)]
pub struct ConfigDecl {
    /// The section's name.
    pub section: &'static str,
    /// Decodes, checks and keeps the section given as JSON (none: the defaults).
    pub load: fn(Option<&str>) -> Result<(), String>,
    /// Where it is declared (`crate::path`), for error messages.
    pub defined_at: &'static str,
}

inventory::collect!(ConfigDecl);

/// Every config section linked into this program, in no particular order.
pub fn registered() -> impl Iterator<Item = &'static ConfigDecl> {
    inventory::iter::<ConfigDecl>.into_iter()
}

/// Declares a module's config type (see the [module docs](self)):
/// `mortar::config!(LobbyConfig, section = "lobby");`, optionally `check = f` (a
/// `fn(&T) -> Result<(), String>`).
#[macro_export]
macro_rules! config {
    ($config:ty, section = $section:literal $(, check = $check:path)? $(,)?) => {
        const _: () = {
            static SLOT: $crate::config::Slot<$config> = $crate::config::Slot::new();
            impl $crate::config::Config for $config {
                const SECTION: &'static str = $section;
                $(
                    fn check(&self) -> ::std::result::Result<(), ::std::string::String> {
                        $check(self)
                    }
                )?
                fn slot() -> &'static $crate::config::Slot<Self> {
                    &SLOT
                }
            }
            $crate::inventory::submit! {
                $crate::config::ConfigDecl {
                    section: $section,
                    load: |json| SLOT.load(json),
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
        assert_eq!(Knobs::slot().get().size, 3, "the defaults before the node reads its config");
        Knobs::slot().load(Some(r#"{"size": 9}"#)).unwrap();
        assert_eq!(Knobs::slot().get().size, 9);
        let unknown = Knobs::slot().load(Some(r#"{"sise": 9}"#)).unwrap_err();
        assert!(unknown.contains("unknown field `sise`"), "{unknown}");
        assert_eq!(Knobs::slot().load(Some(r#"{"size": 0}"#)).unwrap_err(), "size must be at least 1");
        assert_eq!(Knobs::slot().get().size, 9, "refused values change nothing");
        Knobs::slot().load(None).unwrap();
        assert_eq!(Knobs::slot().get().size, 3);
    }
}
