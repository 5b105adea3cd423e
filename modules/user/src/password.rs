//! Password hashing: argon2id on the host's blocking threads, behind a queue of this module's own
//! that puts logins first and is bounded, with memory reused from one hash to the next.
//!
//! **The queue.** At most `hash_slots` hashes run at once on a node; registers may hold at most
//! half of them (at least one), so a flood of registrations leaves the other slots to logins. When
//! a slot frees, a waiting login gets it before any waiting register. At most `login_queue` logins
//! and `register_queue` registers wait; one more is answered `RATE_LIMITED` at once, instead of
//! waiting for its deadline. A caller that stops waiting (its deadline, a closed connection)
//! leaves the queue; a slot it was just handed goes on to the next.
//!
//! **The memory.** argon2 allocates its memory (19 MiB at the defaults) for every hash and frees it
//! after. glibc serves such blocks from per-thread arenas once the first one was freed (its mmap
//! threshold rises to their size), and keeps them: 100 logins took a node from 13 MB to
//! 350–800 MB. Here the blocks are kept in a pool instead, one per slot at most, and every hash
//! borrows one, so the memory is bounded by `hash_slots` (docs/benchmarks.md has the measurement).
//!
//! The queue and the pool belong to the node (the module's instance, [`crate::User`]): two nodes
//! in one process, as in tests, each have theirs, sized by their own config.

use crate::UserConfig;
use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::phc::{Output, ParamsString, PasswordHash, Salt},
};
use futures::channel::oneshot;
use mortar::prelude::*;
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, OnceLock, PoisonError},
};

/// The module's hashing on one node: its slots and buffers (made by the node's first hash, from
/// its config), and the hash an unknown account's login checks.
#[derive(Default)]
pub(crate) struct Hashing {
    gate: OnceLock<Arc<Gate>>,
    dummy: OnceLock<String>,
}

/// What a hash is for: which queue it waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A login's verification: served first.
    Login,
    /// A new account's hash: at most half the slots.
    Register,
}

/// The hashing slots of a node, and argon2's memory: one buffer per running hash, kept for the
/// next.
struct Gate {
    slots: usize,
    register_slots: usize,
    login_queue: usize,
    register_queue: usize,
    state: Mutex<State>,
    buffers: Mutex<Vec<Vec<Block>>>,
}

#[derive(Default)]
struct State {
    running: usize,
    running_registers: usize,
    logins: VecDeque<oneshot::Sender<Slot>>,
    registers: VecDeque<oneshot::Sender<Slot>>,
}

/// A hashing slot, given back on drop (to the next waiter, logins first).
pub(crate) struct Slot {
    gate: Arc<Gate>,
    purpose: Purpose,
    armed: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.armed {
            self.gate.release(self.purpose);
        }
    }
}

impl Gate {
    fn new(config: &UserConfig) -> Self {
        let slots = match config.hash_slots {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n as usize,
        };
        Self {
            slots,
            register_slots: (slots / 2).max(1),
            login_queue: config.login_queue as usize,
            register_queue: config.register_queue as usize,
            state: Mutex::new(State::default()),
            buffers: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a hash for `purpose` may start now, with `state` as it is.
    fn may_start(&self, state: &State, purpose: Purpose) -> bool {
        state.running < self.slots
            && match purpose {
                Purpose::Login => true,
                // Logins waiting go first.
                Purpose::Register => state.running_registers < self.register_slots && state.logins.is_empty(),
            }
    }

    fn start(self: &Arc<Self>, state: &mut State, purpose: Purpose) -> Slot {
        state.running += 1;
        if purpose == Purpose::Register {
            state.running_registers += 1;
        }
        Slot { gate: Arc::clone(self), purpose, armed: true }
    }

    /// A slot for `purpose`, at once or once one frees.
    async fn acquire(self: &Arc<Self>, purpose: Purpose) -> Result<Slot, Failure> {
        let waiting = {
            let mut state = self.lock();
            let queue_empty = match purpose {
                Purpose::Login => state.logins.is_empty(),
                Purpose::Register => state.registers.is_empty(),
            };
            if queue_empty && self.may_start(&state, purpose) {
                return Ok(self.start(&mut state, purpose));
            }
            let (queue, bound, what) = match purpose {
                Purpose::Login => (&mut state.logins, self.login_queue, "logins"),
                Purpose::Register => (&mut state.registers, self.register_queue, "registrations"),
            };
            if queue.len() >= bound {
                return Err(Code::RATE_LIMITED.because(format!(
                    "the server is busy: {bound} {what} wait for a password check; retry later"
                )));
            }
            let (tx, rx) = oneshot::channel();
            queue.push_back(tx);
            rx
        };
        // Dropping `waiting` (the caller gave up) makes the releaser pass the slot on; a slot sent
        // just before is dropped with the channel, which gives it back.
        waiting.await.map_err(|_| Code::INTERNAL.into())
    }

    /// Gives a slot of `purpose` back and hands free slots to waiters, logins first.
    fn release(self: &Arc<Self>, purpose: Purpose) {
        let mut state = self.lock();
        state.running -= 1;
        if purpose == Purpose::Register {
            state.running_registers -= 1;
        }
        loop {
            let next = if state.running >= self.slots {
                None
            } else if !state.logins.is_empty() {
                Some(Purpose::Login)
            } else if !state.registers.is_empty() && state.running_registers < self.register_slots {
                Some(Purpose::Register)
            } else {
                None
            };
            let Some(next) = next else { return };
            let waiter = match next {
                Purpose::Login => state.logins.pop_front(),
                Purpose::Register => state.registers.pop_front(),
            };
            let Some(waiter) = waiter else { return };
            let slot = self.start(&mut state, next);
            if let Err(mut slot) = waiter.send(slot) {
                // That caller is gone: undo without re-entering this lock, and try the next.
                slot.armed = false;
                state.running -= 1;
                if next == Purpose::Register {
                    state.running_registers -= 1;
                }
            }
        }
    }
}

impl Gate {
    /// Runs `f` with a buffer of at least `blocks` blocks from the pool, and puts it back (the
    /// pool keeps at most one per slot).
    fn with_buffer<R>(&self, blocks: usize, f: impl FnOnce(&mut [Block]) -> R) -> R {
        let taken = self.buffers.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut buffer = taken.unwrap_or_default();
        if buffer.len() < blocks {
            buffer.resize(blocks, Block::default());
        }
        let out = f(&mut buffer[..blocks]);
        let mut pool = self.buffers.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < self.slots {
            pool.push(buffer);
        }
        out
    }
}

/// This node's hashing: the user module's instance's, made from its config on first use.
fn hashing(ctx: &Ctx) -> Result<(Arc<crate::User>, Arc<Gate>), Failure> {
    let user = ctx.module::<crate::User>().ok_or(Code::INTERNAL)?;
    let gate = user.hashing.gate.get_or_init(|| Arc::new(Gate::new(&ctx.config::<UserConfig>()))).clone();
    Ok((user, gate))
}

/// A PHC string of `password` hashed with the configured parameters and a fresh salt.
fn hash_with(config: &UserConfig, password: &[u8], gate: &Gate) -> Result<String, String> {
    let params = config.params()?;
    let salt: [u8; Salt::RECOMMENDED_LENGTH] = rand::random();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    gate.with_buffer(params.block_count(), |blocks| {
        argon2.hash_password_into_with_memory(password, &salt, &mut out, blocks)
    })
    .map_err(|error| error.to_string())?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|error| error.to_string())?,
        salt: Some(Salt::new(&salt).map_err(|error| error.to_string())?),
        hash: Some(Output::new(&out).map_err(|error| error.to_string())?),
    };
    Ok(phc.to_string())
}

/// Whether `password` hashes to `stored` (a PHC string of argon2); false for a string that is
/// not one.
fn verify_with(stored: &str, password: &[u8], gate: &Gate) -> bool {
    #[cfg(test)]
    tests::VERIFIED.with(|verified| verified.set(verified.get() + 1));
    let Ok(phc) = PasswordHash::new(stored) else { return false };
    let (Ok(algorithm), Ok(params)) = (Algorithm::try_from(phc.algorithm.as_str()), Params::try_from(&phc))
    else {
        return false;
    };
    let version = phc.version.map_or(Ok(Version::V0x13), Version::try_from);
    let (Ok(version), Some(salt), Some(expected)) = (version, phc.salt.as_ref(), phc.hash.as_ref()) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let hashed = gate.with_buffer(params.block_count(), |blocks| {
        argon2.hash_password_into_with_memory(password, salt.as_ref(), &mut out, blocks)
    });
    hashed.is_ok() && crate::same(&out, expected.as_bytes())
}

/// Hashes `password` for a new account, in the registrations' queue.
///
/// # Errors
/// `RATE_LIMITED` when the queue is full; `INTERNAL`.
pub(crate) async fn hash(ctx: &Ctx, password: String) -> Result<String, Failure> {
    let (_, gate) = hashing(ctx)?;
    let slot = gate.acquire(Purpose::Register).await?;
    let config = ctx.config::<UserConfig>();
    let hashed = ctx.blocking(move || {
        let _slot = slot;
        hash_with(&config, password.as_bytes(), &gate)
    });
    hashed.await?.map_err(|_| Code::INTERNAL.into())
}

/// Whether `password` matches `stored`, in the logins' queue. Without an account a hash made once
/// is checked instead, so both take the same time (see [`check`]).
///
/// # Errors
/// `RATE_LIMITED` when the queue is full; `INTERNAL`.
pub(crate) async fn verify(ctx: &Ctx, password: String, stored: Option<String>) -> Result<bool, Failure> {
    let (user, gate) = hashing(ctx)?;
    let slot = gate.acquire(Purpose::Login).await?;
    let config = ctx.config::<UserConfig>();
    let checked = ctx.blocking(move || {
        let _slot = slot;
        // Made by the node's first login, whichever account it names, so that no login pays for
        // it alone and an unknown account never takes longer than a known one.
        let dummy = match user.hashing.dummy.get() {
            Some(dummy) => dummy,
            None => {
                let dummy = hash_with(&config, b"not a password of anyone", &gate)?;
                user.hashing.dummy.get_or_init(|| dummy)
            }
        };
        Ok::<_, String>(check(stored.as_deref(), dummy, password.as_bytes(), &gate))
    });
    checked.await?.map_err(|_| Code::INTERNAL.into())
}

/// Whether `password` matches `stored`; without an account, `dummy` is checked and the answer is
/// no. One argon2 verification either way: the time does not say whether the account exists.
fn check(stored: Option<&str>, dummy: &str, password: &[u8], gate: &Gate) -> bool {
    let matched = verify_with(stored.unwrap_or(dummy), password, gate);
    stored.is_some() && matched
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::PasswordVerifier as _;

    thread_local! {
        /// Argon2 verifications run on this thread.
        pub(super) static VERIFIED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    #[test]
    fn an_unknown_account_costs_one_verification_like_a_known_one() {
        let config = cheap();
        let gate = Gate::new(&config);
        let (stored, dummy) =
            (hash_with(&config, b"password1", &gate).unwrap(), hash_with(&config, b"x", &gate).unwrap());
        let verifications = |stored: Option<&str>, password: &[u8]| {
            let before = VERIFIED.with(std::cell::Cell::get);
            let matched = check(stored, &dummy, password, &gate);
            (matched, VERIFIED.with(std::cell::Cell::get) - before)
        };
        assert_eq!(verifications(Some(&stored), b"password1"), (true, 1));
        assert_eq!(verifications(Some(&stored), b"password2"), (false, 1));
        assert_eq!(verifications(None, b"password1"), (false, 1), "the dummy is checked");
        assert_eq!(verifications(None, b"x"), (false, 1), "and never lets anyone in");
    }

    fn cheap() -> UserConfig {
        UserConfig { argon2_memory_kib: 64, argon2_iterations: 1, ..UserConfig::default() }
    }

    #[test]
    fn hashes_are_argon2id_phc_strings_that_argon2_itself_accepts() {
        let config = cheap();
        let gate = Gate::new(&config);
        let stored = hash_with(&config, b"password1", &gate).unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{stored}");
        assert!(config.hasher().unwrap().verify_password(b"password1", stored.as_str()).is_ok());
        assert!(verify_with(&stored, b"password1", &gate));
        assert!(!verify_with(&stored, b"password2", &gate));
        assert!(!verify_with("not a hash", b"password1", &gate));
    }

    #[test]
    fn logins_go_first_registrations_get_half_and_a_full_queue_refuses_at_once() {
        use futures::FutureExt as _;
        use std::{
            pin::Pin,
            task::{Context, Poll},
        };
        type Waiting = Pin<Box<dyn Future<Output = Result<Slot, Failure>>>>;
        fn poll(waiting: &mut Waiting) -> Option<Result<Slot, Failure>> {
            match waiting.as_mut().poll(&mut Context::from_waker(futures::task::noop_waker_ref())) {
                Poll::Ready(out) => Some(out),
                Poll::Pending => None,
            }
        }
        let config = UserConfig { hash_slots: 2, login_queue: 1, register_queue: 1, ..UserConfig::default() };
        let gate: &'static Arc<Gate> = Box::leak(Box::new(Arc::new(Gate::new(&config))));
        let refused =
            |out: Option<Result<Slot, Failure>>| out.unwrap().err().unwrap().code() == Code::RATE_LIMITED;

        let register_1 = gate.acquire(Purpose::Register).now_or_never().unwrap().ok().unwrap();
        let mut register_2: Waiting = Box::pin(gate.acquire(Purpose::Register));
        assert!(poll(&mut register_2).is_none(), "registrations hold one of the two slots");
        assert!(refused(gate.acquire(Purpose::Register).now_or_never()), "its queue is full");
        let login_1 = gate.acquire(Purpose::Login).now_or_never().unwrap().ok().unwrap();
        let mut login_2: Waiting = Box::pin(gate.acquire(Purpose::Login));
        assert!(poll(&mut login_2).is_none());
        assert!(refused(gate.acquire(Purpose::Login).now_or_never()));

        drop(register_1);
        assert!(poll(&mut register_2).is_none(), "the waiting login goes first");
        let login_2 = poll(&mut login_2).unwrap().ok().unwrap();
        // A login that gives up waiting leaves; its turn passes on.
        let mut gone: Waiting = Box::pin(gate.acquire(Purpose::Login));
        assert!(poll(&mut gone).is_none());
        drop(gone);
        drop(login_1);
        let register_2 = poll(&mut register_2).unwrap().ok().unwrap();
        drop((login_2, register_2));
        let state = gate.lock();
        assert_eq!(
            (state.running, state.running_registers, state.logins.len(), state.registers.len()),
            (0, 0, 0, 0)
        );
    }

    #[test]
    fn hashes_made_by_argon2_itself_still_verify() {
        use argon2::PasswordHasher as _;
        let stored = cheap().hasher().unwrap().hash_password(b"password1").unwrap().to_string();
        let gate = Gate::new(&cheap());
        assert!(verify_with(&stored, b"password1", &gate));
        assert!(!verify_with(&stored, b"password", &gate));
    }
}
