//! The one future type that crosses between the host and the SDK.

use std::{future::Future, pin::Pin};

/// A boxed future that the host returns to the SDK (and the SDK's glue to the host).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
