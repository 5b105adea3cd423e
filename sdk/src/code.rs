//! [`Code`]: the outcome a client sees on a reply; [`Failure`]: a code with the reason a person
//! reads.

pub use mortar_abi::code::{Code, Failure};
