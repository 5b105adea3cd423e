//! [`Code`]: the outcome a client sees on a reply; [`Failure`]: a code with the reason a person
//! reads.

use mortar_pb::ErrorCode;
use std::{borrow::Cow, fmt};

/// A reply's code: one of the protocol's [`ErrorCode`]s or a module's own code (1000 and up).
///
/// Handlers return `Err(Code)` to answer a request with that code and an empty body, or
/// `Err(code.because("…"))` to say why as well (see [`Failure`]).
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

    /// This code with a reason for the client: `Err(Code::BAD_REQUEST.because("account must be
    /// 3–32 characters"))`. See [`Failure`] for what a reason may say.
    pub fn because(self, reason: impl Into<Cow<'static, str>>) -> Failure {
        Failure { code: self, reason: Some(reason.into()) }
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

/// Why a request failed: a [`Code`] and, optionally, a reason in a few words.
///
/// Handlers and layers return `Err(Failure)` (or `Err(Code)`, which converts) to answer with the
/// code, an empty body and the reason in the reply's `reason` field. The reason is for people and
/// logs: clients branch on the code and never parse it. It goes to the client as written, so it
/// must say only what the client may know (`account must be 3–32 characters`, not a database
/// error); the gateway cuts it to 200 bytes, at a character boundary. A reason given with
/// [`Code::OK`] is never sent.
///
/// ```
/// use mortar_abi::{Code, Failure};
///
/// fn check(account: &str) -> Result<(), Failure> {
///     if !(3..=32).contains(&account.len()) {
///         return Err(Code::BAD_REQUEST.because("account must be 3–32 characters"));
///     }
///     Ok(())
/// }
///
/// let failure = check("a").unwrap_err();
/// assert_eq!((failure.code(), failure.reason()), (Code::BAD_REQUEST, Some("account must be 3–32 characters")));
/// assert_eq!(Failure::from(Code::NOT_FOUND).reason(), None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Failure {
    code: Code,
    reason: Option<Cow<'static, str>>,
}

impl Failure {
    /// The reply's code.
    pub const fn code(&self) -> Code {
        self.code
    }

    /// The reason, when one was given (an empty one counts as none).
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref().filter(|reason| !reason.is_empty())
    }

    /// The code and the reason, taken apart.
    pub fn into_parts(self) -> (Code, Option<Cow<'static, str>>) {
        (self.code, self.reason.filter(|reason| !reason.is_empty()))
    }
}

impl From<Code> for Failure {
    fn from(code: Code) -> Self {
        Self { code, reason: None }
    }
}

impl From<ErrorCode> for Failure {
    fn from(code: ErrorCode) -> Self {
        Code::from(code).into()
    }
}

/// `BAD_REQUEST: account must be 3–32 characters`, or the code alone without a reason.
impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason() {
            Some(reason) => write!(f, "{}: {reason}", self.code),
            None => fmt::Display::fmt(&self.code, f),
        }
    }
}

impl std::error::Error for Failure {}

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

    #[test]
    fn a_failure_carries_its_code_and_reason() {
        let failure = Code::BAD_REQUEST.because("name must be 1–24 characters");
        assert_eq!(failure.code(), Code::BAD_REQUEST);
        assert_eq!(failure.reason(), Some("name must be 1–24 characters"));
        assert_eq!(failure.to_string(), "BAD_REQUEST: name must be 1–24 characters");
        let owned = Code::module(1001).because(format!("{} items short", 3));
        assert_eq!(owned.to_string(), "1001: 3 items short");
        let bare = Failure::from(Code::NOT_FOUND);
        assert_eq!((bare.reason(), bare.to_string().as_str()), (None, "NOT_FOUND"));
        assert_eq!(Code::INTERNAL.because("").into_parts(), (Code::INTERNAL, None));
        // `?` turns a bare code into a failure.
        let failed = || -> Result<(), Failure> { Err(Code::CONFLICT)? };
        assert_eq!(failed().unwrap_err(), Failure::from(Code::CONFLICT));
    }
}
