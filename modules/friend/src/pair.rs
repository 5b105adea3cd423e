//! One pair of players, one truth: how the state of two players' friendship is kept so that
//! their two lists never contradict each other, whatever their routes race.
//!
//! Each player has one document (collection `friend`, id = user id) with a [`Link`] per player
//! they have anything to do with: how each of the two stands with the other. The link of a pair
//! is kept in both documents, but only the document of the **lower** user id holds the truth:
//! every change of a pair is a compare-and-set of that one document ([`change`]), so changes of
//! one pair are applied one after the other, each seeing the last. The higher player's document
//! then gets a copy (`mirror`): read the truth, write it, read the truth again until it did not
//! move. When every route on a pair has finished, the copy equals the truth (the last copy
//! written read a truth that no later change moved without writing its own copy after it).
//!
//! A crash between the truth and its copy leaves the copy behind until the next change of that
//! pair, by either player (every route is idempotent: asking again repairs it).
//!
//! Documents of the previous version (`entries` with my standing, and `blocked_by`) are read as
//! links ([`Friends::upgrade`]); the first time a player's own list is read, the links where the
//! player is the higher id are replaced by copies of their truths and the document is written
//! back in the new shape ([`list_of`]).

use crate::{Standing, UNCHANGED, now_ms};
use mortar::{prelude::*, store::UpdateError};
use serde::{Deserialize, Serialize};

/// Reads and writes of a pair's copy, or of a list being made current, before `CONFLICT`.
const ATTEMPTS: u32 = 10;

/// How the two players of a pair stand with each other, seen from one of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pair {
    /// How the other stands with me (what my list says).
    pub mine: Option<Standing>,
    /// How I stand with the other (what their list says).
    pub theirs: Option<Standing>,
}

impl Pair {
    /// Friends on both sides.
    pub const FRIENDS: Pair = Pair { mine: Some(Standing::Friend), theirs: Some(Standing::Friend) };

    /// The same pair seen from the other player.
    pub fn flip(self) -> Self {
        Self { mine: self.theirs, theirs: self.mine }
    }

    fn is_empty(self) -> bool {
        self.mine.is_none() && self.theirs.is_none()
    }
}

/// One pair on my list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The other player.
    pub user: u64,
    /// How they stand with me (shown on my list); none when only they have me on theirs.
    pub mine: Option<Standing>,
    /// How I stand with them: `Blocked` means they block me.
    pub theirs: Option<Standing>,
    /// Since when the pair is as it is, ms since the Unix epoch.
    pub since_ms: i64,
}

impl Link {
    fn pair(&self) -> Pair {
        Pair { mine: self.mine, theirs: self.theirs }
    }

    /// This link as the other player's document holds it.
    fn flip(self, me: u64) -> Link {
        Link { user: me, mine: self.theirs, theirs: self.mine, since_ms: self.since_ms }
    }
}

/// A link as the previous version stored it: my standing only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The other player.
    pub user: u64,
    /// How they stand with me.
    pub standing: Standing,
    /// Since when, ms since the Unix epoch.
    pub since_ms: i64,
}

/// [`Friends::format`] of a current document.
pub const FORMAT: u32 = 2;

/// A player's list: document id = user id.
#[derive(Clone, Debug, Serialize, Deserialize, mortar::Document)]
#[document(collection = "friend")]
pub struct Friends {
    /// Every pair this player is in, in the order they were added.
    #[serde(default)]
    pub links: Vec<Link>,
    /// The shape of this document: [`FORMAT`] once the links where this player has the higher
    /// id are copies of their truths; 0 (missing) for documents of the previous version until
    /// their first read ([`list_of`]). (A number, not a bool: the MongoDB test server nx-27017
    /// reads booleans back as integers.)
    #[serde(default)]
    pub format: u32,
    /// The previous version's list (read, never written: see [`Friends::upgrade`]).
    #[serde(default, skip_serializing)]
    entries: Vec<Entry>,
    /// The previous version's "who blocks me" (read, never written).
    #[serde(default, skip_serializing)]
    blocked_by: Vec<u64>,
}

impl Default for Friends {
    fn default() -> Self {
        Self { links: Vec::new(), format: FORMAT, entries: Vec::new(), blocked_by: Vec::new() }
    }
}

/// How many players stand how on one list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Friends.
    pub friends: usize,
    /// Requests I sent that wait.
    pub sent: usize,
    /// Requests I received that wait.
    pub received: usize,
    /// Players I block.
    pub blocked: usize,
}

impl Friends {
    /// Turns a document of the previous version into links: my standing as it was, theirs as
    /// mine implies (and `Blocked` where they block me). Nothing to do on a current one.
    pub fn upgrade(&mut self) {
        let entries = std::mem::take(&mut self.entries);
        let blocked_by = std::mem::take(&mut self.blocked_by);
        for entry in entries {
            let blocks_me = blocked_by.contains(&entry.user);
            let theirs = match entry.standing {
                Standing::Friend => Some(Standing::Friend),
                Standing::Sent if blocks_me => Some(Standing::Blocked),
                Standing::Sent => Some(Standing::Received),
                Standing::Received => Some(Standing::Sent),
                Standing::Blocked => blocks_me.then_some(Standing::Blocked),
            };
            let pair = Pair { mine: Some(entry.standing), theirs };
            self.put(Link {
                user: entry.user,
                mine: pair.mine,
                theirs: pair.theirs,
                since_ms: entry.since_ms,
            });
        }
        for user in blocked_by {
            if self.link(user).is_none() {
                self.put(Link { user, mine: None, theirs: Some(Standing::Blocked), since_ms: 0 });
            }
        }
    }

    /// The link with `user`, if any.
    pub fn link(&self, user: u64) -> Option<Link> {
        self.links.iter().find(|link| link.user == user).copied()
    }

    /// How I and `user` stand.
    pub fn pair(&self, user: u64) -> Pair {
        self.link(user).map_or_else(Pair::default, |link| link.pair())
    }

    /// How `user` stands with the owner of this list (what the list shows).
    pub fn standing_of(&self, user: u64) -> Option<Standing> {
        self.pair(user).mine
    }

    /// Writes the link with `link.user`, keeping its place; an empty one is dropped.
    fn put(&mut self, link: Link) {
        let at = self.links.iter().position(|old| old.user == link.user);
        match at {
            _ if link.pair().is_empty() => self.links.retain(|old| old.user != link.user),
            Some(at) => self.links[at] = link,
            None => self.links.push(link),
        }
    }

    /// The ids whose links say `which` of mine.
    pub fn with(&self, which: Standing) -> Vec<u64> {
        self.links.iter().filter(|link| link.mine == Some(which)).map(|link| link.user).collect()
    }

    /// The friends' ids.
    pub fn friends(&self) -> Vec<u64> {
        self.with(Standing::Friend)
    }

    /// Who blocks the owner of this list.
    pub fn blocked_by(&self) -> Vec<u64> {
        self.links
            .iter()
            .filter(|link| link.theirs == Some(Standing::Blocked))
            .map(|link| link.user)
            .collect()
    }

    /// How many stand how.
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for link in &self.links {
            match link.mine {
                Some(Standing::Friend) => counts.friends += 1,
                Some(Standing::Sent) => counts.sent += 1,
                Some(Standing::Received) => counts.received += 1,
                Some(Standing::Blocked) => counts.blocked += 1,
                None => {}
            }
        }
        counts
    }

    /// The requests waiting for me, the oldest first.
    pub fn received_oldest_first(&self) -> Vec<u64> {
        let mut received: Vec<&Link> =
            self.links.iter().filter(|link| link.mine == Some(Standing::Received)).collect();
        received.sort_by_key(|link| link.since_ms); // stable: the list's order among equals
        received.into_iter().map(|link| link.user).collect()
    }
}

fn codes(error: UpdateError) -> Code {
    error.code()
}

/// `user`'s document as stored (read in the current shape), without writing anything.
///
/// # Errors
/// `UNAVAILABLE`, `INTERNAL`.
pub async fn doc_of(ctx: &Ctx, user: u64) -> Result<Friends, Code> {
    let mut doc = ctx.store::<Friends>().try_get(user).await?.map(|found| found.doc).unwrap_or_default();
    doc.upgrade();
    Ok(doc)
}

/// `user`'s own list: a document of the previous version is first made current (its copies
/// taken from their truths, then written back).
///
/// # Errors
/// `UNAVAILABLE`, `INTERNAL`, `CONFLICT` when it kept changing while being made current.
pub async fn list_of(ctx: &Ctx, user: u64) -> Result<Friends, Code> {
    let store = ctx.store::<Friends>();
    for attempt in 1..=ATTEMPTS {
        let Some(mut found) = store.try_get(user).await? else { return Ok(Friends::default()) };
        found.doc.upgrade();
        if found.doc.format >= FORMAT {
            return Ok(found.doc);
        }
        // Read the truths after the version this write will name: a copy written meanwhile
        // makes the write conflict, and the truths are read again.
        let lower: Vec<u64> =
            found.doc.links.iter().map(|link| link.user).filter(|&other| other < user).collect();
        for other in lower {
            let truth = doc_of(ctx, other).await?.link(user).map(|link| link.flip(other));
            let link = truth.unwrap_or(Link { user: other, mine: None, theirs: None, since_ms: 0 });
            found.doc.put(link);
        }
        found.doc.format = FORMAT;
        match store.save(found).await {
            Ok(saved) => return Ok(saved.doc),
            Err(mortar::store::StoreError::Conflict) if attempt < ATTEMPTS => {
                ctx.sleep(std::time::Duration::from_millis(u64::from(attempt) * 5)).await;
            }
            Err(error) => return Err(error.code()),
        }
    }
    Err(Code::CONFLICT)
}

/// Changes the pair of `me` and `them`: `change` gets the pair as I see it, my counts and
/// theirs, and may refuse with a code (nothing is written). The truth is written first, then
/// the copy. Returns what `change` returned.
///
/// The counts of the player with the lower id are read inside the compare-and-set; those of the
/// other just before it, so racing requests may pass that player's limits by as many as race.
///
/// # Errors
/// `change`'s code; `CONFLICT` when the pair kept changing; `UNAVAILABLE`, `INTERNAL`.
pub async fn change<R>(
    ctx: &Ctx,
    me: u64,
    them: u64,
    mut change: impl FnMut(&mut Pair, Counts, Counts) -> Result<R, Code>,
) -> Result<R, Code> {
    let (lower, higher) = (me.min(them), me.max(them));
    let i_am_lower = me == lower;
    let higher_counts = doc_of(ctx, higher).await?.counts();
    let now = now_ms(ctx);
    let mut out = None;
    let written = ctx
        .store::<Friends>()
        .upsert(lower, |doc| {
            doc.upgrade();
            let lower_counts = doc.counts();
            let truth = doc.pair(higher);
            let (before, mine, theirs) = if i_am_lower {
                (truth, lower_counts, higher_counts)
            } else {
                (truth.flip(), higher_counts, lower_counts)
            };
            let mut after = before;
            out = Some(change(&mut after, mine, theirs)?);
            if after == before {
                return Err(UNCHANGED);
            }
            let after = if i_am_lower { after } else { after.flip() };
            doc.put(Link { user: higher, mine: after.mine, theirs: after.theirs, since_ms: now });
            Ok(())
        })
        .await;
    match written {
        Ok(_) | Err(UpdateError::Refused(UNCHANGED)) => {}
        Err(error) => return Err(codes(error)),
    }
    mirror(ctx, lower, higher).await?;
    out.ok_or(Code::INTERNAL)
}

/// Makes the higher player's copy of the pair equal its truth (see the module docs).
async fn mirror(ctx: &Ctx, lower: u64, higher: u64) -> Result<(), Code> {
    let truth_now = || async move {
        let link = doc_of(ctx, lower).await?.link(higher).map(|link| link.flip(lower));
        Ok::<_, Code>(link.unwrap_or(Link { user: lower, mine: None, theirs: None, since_ms: 0 }))
    };
    let mut truth = truth_now().await?;
    for _ in 0..ATTEMPTS {
        let written = ctx
            .store::<Friends>()
            .upsert(higher, |doc| {
                doc.upgrade();
                if doc.link(lower).unwrap_or(Link { user: lower, mine: None, theirs: None, since_ms: 0 })
                    == truth
                {
                    return Err(UNCHANGED);
                }
                doc.put(truth);
                Ok(())
            })
            .await;
        match written {
            Ok(_) | Err(UpdateError::Refused(UNCHANGED)) => {}
            Err(error) => return Err(codes(error)),
        }
        let again = truth_now().await?;
        if again == truth {
            return Ok(());
        }
        truth = again;
    }
    Err(Code::CONFLICT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_the_previous_version_reads_as_links() {
        let old: Friends = serde_json::from_value(serde_json::json!({
            "entries": [
                { "user": 5, "standing": "Friend", "since_ms": 1 },
                { "user": 6, "standing": "Sent", "since_ms": 2 },
                { "user": 7, "standing": "Received", "since_ms": 3 },
                { "user": 8, "standing": "Blocked", "since_ms": 4 },
                { "user": 9, "standing": "Sent", "since_ms": 5 },
            ],
            "blocked_by": [9, 10],
        }))
        .unwrap();
        let mut doc = old;
        assert_eq!(doc.format, 0);
        doc.upgrade();
        let pairs: Vec<(u64, Pair)> = doc.links.iter().map(|link| (link.user, link.pair())).collect();
        use Standing::*;
        assert_eq!(
            pairs,
            [
                (5, Pair::FRIENDS),
                (6, Pair { mine: Some(Sent), theirs: Some(Received) }),
                (7, Pair { mine: Some(Received), theirs: Some(Sent) }),
                (8, Pair { mine: Some(Blocked), theirs: None }),
                (9, Pair { mine: Some(Sent), theirs: Some(Blocked) }),
                (10, Pair { mine: None, theirs: Some(Blocked) }),
            ]
        );
        assert_eq!(doc.blocked_by(), [9, 10]);
        assert_eq!(doc.counts(), Counts { friends: 1, sent: 2, received: 1, blocked: 1 });
        // Written back, only the links remain.
        let written = serde_json::to_value(&doc).unwrap();
        let mut keys: Vec<&String> = written.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["format", "links"]);
    }

    #[test]
    fn an_empty_pair_leaves_the_list_and_a_changed_one_keeps_its_place() {
        let mut doc = Friends::default();
        for user in [1, 2, 3] {
            doc.put(Link {
                user,
                mine: Some(Standing::Received),
                theirs: Some(Standing::Sent),
                since_ms: 10 - user as i64,
            });
        }
        assert_eq!(doc.received_oldest_first(), [3, 2, 1]);
        doc.put(Link { user: 2, mine: Some(Standing::Friend), theirs: Some(Standing::Friend), since_ms: 20 });
        doc.put(Link { user: 1, mine: None, theirs: None, since_ms: 20 });
        assert_eq!(doc.links.iter().map(|link| link.user).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(doc.friends(), [2]);
        assert_eq!(Pair::FRIENDS.flip(), Pair::FRIENDS);
    }
}
