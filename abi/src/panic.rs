//! Panics stop where they were raised. A library has its own copy of the standard library, and a
//! panic unwinding out of it into the host cannot be caught there (the process aborts), so the
//! SDK catches every panic of module code on the module's side: in handlers, spawned tasks and
//! hooks.

use std::{
    any::Any,
    future::Future,
    panic::{AssertUnwindSafe, catch_unwind},
    task::Poll,
};

/// Runs `future` to its end; a panic while polling it ends it with the panic's message.
#[doc(hidden)]
pub async fn catch<F: Future>(future: F) -> Result<F::Output, String> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(move |cx| match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
        Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(payload) => Poll::Ready(Err(message(&*payload))),
    })
    .await
}

/// The message of a panic payload (`panic!("…")` gives a `&str` or a `String`).
#[doc(hidden)]
pub fn message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_its_message() {
        assert_eq!(catch(async { 7 }).await, Ok(7));
        let text = String::from("boom");
        let result = catch(async move {
            tokio::task::yield_now().await;
            panic!("{text}")
        })
        .await;
        assert_eq!(result, Err::<(), _>("boom".into()));
    }
}
