//! [`Code`]: the outcome a client sees on a reply.

use mortar_pb::ErrorCode;
use std::fmt;

/// A reply's code: one of the protocol's [`ErrorCode`]s or a module's own code (1000 and up).
///
/// Handlers return `Err(Code)` to answer a request with that code and an empty body.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code(i32);

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $variant:ident;)*) => {
        impl Code {
            $($(#[$doc])* pub const $name: Code = Code(ErrorCode::$variant as i32);)*
        }
    };
}

codes! {
    /// Success.
    OK = Ok;
    /// No module serves this route here, or it is internal.
    NO_ROUTE = NoRoute;
    /// The body does not decode as the route's request type, or is invalid.
    BAD_REQUEST = BadRequest;
    /// The route needs a logged-in session.
    NOT_LOGGED_IN = NotLoggedIn;
    /// No live worker serves the route right now.
    UNAVAILABLE = Unavailable;
    /// The request passed its deadline.
    TIMEOUT = Timeout;
    /// The session sends faster than its limits allow.
    RATE_LIMITED = RateLimited;
    /// A server bug or failure; the detail is in the server's log, never on the wire.
    INTERNAL = Internal;
    /// A concurrent change won; retry.
    CONFLICT = Conflict;
    /// The thing asked for does not exist.
    NOT_FOUND = NotFound;
    /// The thing to create exists already.
    ALREADY_EXISTS = AlreadyExists;
    /// The session may not do this.
    PERMISSION_DENIED = PermissionDenied;
    /// The session was replaced by a newer login of the same user.
    LOGGED_IN_ELSEWHERE = LoggedInElsewhere;
    /// The node is shutting down.
    SERVER_SHUTDOWN = ServerShutdown;
}

impl Code {
    /// The first number a module may use for its own codes.
    pub const MODULE_BASE: i32 = 1000;

    /// A module's own code.
    ///
    /// # Panics
    /// When `code` is below [`Code::MODULE_BASE`]; in a `const` this is a compile error.
    pub const fn module(code: i32) -> Code {
        assert!(code >= Self::MODULE_BASE, "module codes start at 1000");
        Code(code)
    }

    /// Any code number as received on the wire.
    pub const fn from_wire(code: i32) -> Code {
        Code(code)
    }

    /// The number sent on the wire.
    pub const fn get(self) -> i32 {
        self.0
    }

    /// Whether this is [`Code::OK`].
    pub const fn is_ok(self) -> bool {
        self.0 == 0
    }
}

impl From<ErrorCode> for Code {
    fn from(code: ErrorCode) -> Self {
        Code(code as i32)
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&ErrorCode::name_of(self.0))
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for Code {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_protocol() {
        assert_eq!(Code::OK.get(), 0);
        assert_eq!(Code::SERVER_SHUTDOWN.get(), 13);
        assert_eq!(format!("{}", Code::NO_ROUTE), "NO_ROUTE");
        assert_eq!(format!("{:?}", Code::module(1001)), "1001");
        assert!(Code::OK.is_ok() && !Code::INTERNAL.is_ok());
    }
}
