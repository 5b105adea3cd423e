//! The session store in this process: `mortar dev`, and tests.

use super::{Location, SessionError, SessionStore};
use mortar_abi::future::BoxFuture;
use std::{
    collections::{HashMap, HashSet},
    sync::{Mutex, PoisonError},
};

/// Locations in a map behind one lock (each operation is a few map updates).
#[derive(Default)]
pub struct MemorySessions {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    users: HashMap<u64, Location>,
    by_gateway: HashMap<String, HashSet<u64>>,
}

impl State {
    fn forget(&mut self, user: u64, gateway: &str) {
        if let Some(users) = self.by_gateway.get_mut(gateway) {
            users.remove(&user);
            if users.is_empty() {
                self.by_gateway.remove(gateway);
            }
        }
    }
}

impl MemorySessions {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl SessionStore for MemorySessions {
    fn restore(&self, user: u64, location: Location) -> BoxFuture<Result<Option<Location>, SessionError>> {
        let held = self.with(|state| match state.users.get(&user) {
            Some(current) if current.is(&location.gateway, location.session) => None,
            Some(current) => Some(current.clone()),
            None => {
                state.by_gateway.entry(location.gateway.clone()).or_default().insert(user);
                state.users.insert(user, location);
                None
            }
        });
        Box::pin(std::future::ready(Ok(held)))
    }

    fn bind(&self, user: u64, location: Location) -> BoxFuture<Result<Option<Location>, SessionError>> {
        let previous = self.with(|state| {
            state.by_gateway.entry(location.gateway.clone()).or_default().insert(user);
            let previous = state.users.insert(user, location.clone());
            if let Some(previous) = &previous
                && previous.gateway != location.gateway
            {
                state.forget(user, &previous.gateway);
            }
            previous
        });
        Box::pin(std::future::ready(Ok(previous)))
    }

    fn unbind(&self, user: u64, gateway: String, session: u64) -> BoxFuture<Result<bool, SessionError>> {
        let removed = self.with(|state| {
            let current = state.users.get(&user).is_some_and(|location| location.is(&gateway, session));
            if current {
                state.users.remove(&user);
                state.forget(user, &gateway);
            }
            current
        });
        Box::pin(std::future::ready(Ok(removed)))
    }

    fn locate(&self, users: Vec<u64>) -> BoxFuture<Result<Vec<Option<Location>>, SessionError>> {
        let found = self.with(|state| users.iter().map(|user| state.users.get(user).cloned()).collect());
        Box::pin(std::future::ready(Ok(found)))
    }

    fn purge_gateway(&self, gateway: String, below: u64) -> BoxFuture<Result<usize, SessionError>> {
        let removed = self.with(|state| {
            let users = state.by_gateway.remove(&gateway).unwrap_or_default();
            let (before, mut kept) = (state.users.len(), Vec::new());
            for user in users {
                match state.users.get(&user) {
                    Some(location) if location.gateway == gateway && location.session < below => {
                        state.users.remove(&user);
                    }
                    Some(location) if location.gateway == gateway => kept.push(user),
                    _ => {}
                }
            }
            if !kept.is_empty() {
                state.by_gateway.insert(gateway, kept.into_iter().collect());
            }
            before - state.users.len()
        });
        Box::pin(std::future::ready(Ok(removed)))
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_sessions_conform() {
        super::super::conformance::run(std::sync::Arc::new(super::MemorySessions::default())).await;
    }
}
