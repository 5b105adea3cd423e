//! The pack module: a player's items.
//!
//! - `pack.query {}` → `{items, version}`; `pack.use {itemId, count}` → `{itemId, remaining}`;
//! - internal `pack.add_items {grantId, items, userId}` → `{granted}`, once per grant id, and
//!   the push `pack.changed {items}` to the owner;
//! - items are defined by the game table `items.json` ([`Item`]).
//!
//! One document per player (id = user id) holds every count and the ids of the last
//! [`GRANTS_KEPT`] grants; every change is a compare-and-set on its version, retried on a race, so
//! counts never go negative and no concurrent update is lost.

use mortar::{prelude::*, store::UpdateError};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The messages of `proto/pack.proto`.
pub mod pack {
    mortar::include_proto!("pack");
}

use pack::{
    AddItemsReq, AddItemsResp, Changed, CheckItemsReq, CheckItemsResp, QueryReq, QueryResp, UseReq, UseResp,
};

mortar::module!("pack");
mortar::export_module!();

/// Not as many of the item as asked for.
pub const NOT_ENOUGH_ITEMS: Code = Code::module(pack::ModuleCode::NotEnoughItems as i32);
/// A grant would take an item past its `max_stack`; nothing was added.
pub const PACK_FULL: Code = Code::module(pack::ModuleCode::PackFull as i32);

/// How many grant ids a pack remembers: a grant retried after more than this many later grants
/// to the same player would be added again.
pub const GRANTS_KEPT: usize = 1000;
/// The most entries one `pack.add_items` may carry.
pub const MAX_GRANT_ENTRIES: usize = 100;
/// The longest grant id, in bytes.
pub const MAX_GRANT_ID_BYTES: usize = 128;

/// What kind of thing an item is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Gold, gems.
    Currency,
    /// Used up when used.
    Consumable,
    /// Crafting input.
    Material,
    /// Worn or wielded.
    Equipment,
}

/// One row of the game table `items.json`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// The item's id, as players' packs and other tables name it.
    pub id: u32,
    /// Its display name.
    pub name: String,
    /// What kind of thing it is.
    pub kind: Kind,
    /// The most of it one pack holds (at least 1).
    pub max_stack: u32,
    /// Whether `pack.use` takes it.
    pub usable: bool,
}

fn check_item(item: &Item) -> Result<(), String> {
    if item.name.trim().is_empty() {
        return Err("name is empty".into());
    }
    if item.max_stack == 0 {
        return Err("max_stack must be at least 1".into());
    }
    Ok(())
}

mortar::table!(
    Item,
    file = "items",
    id = id,
    default = include_str!("../tables/items.json"),
    check = check_item
);

/// A number of one item in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The item.
    pub item: u32,
    /// How many; never 0 (the slot goes instead).
    pub count: u32,
}

/// A player's pack: document id = user id.
#[derive(Clone, Debug, Default, Serialize, Deserialize, mortar::Document)]
#[document(collection = "pack")]
pub struct PackDoc {
    /// The items held, ordered by item id.
    pub slots: Vec<Slot>,
    /// The last grant ids applied, oldest first.
    pub grants: VecDeque<String>,
}

impl PackDoc {
    /// How many of `item` the pack holds.
    pub fn count(&self, item: u32) -> u32 {
        self.slots.binary_search_by_key(&item, |slot| slot.item).map_or(0, |at| self.slots[at].count)
    }

    fn set(&mut self, item: u32, count: u32) {
        match (self.slots.binary_search_by_key(&item, |slot| slot.item), count) {
            (Ok(at), 0) => {
                self.slots.remove(at);
            }
            (Ok(at), count) => self.slots[at].count = count,
            (Err(_), 0) => {}
            (Err(at), count) => self.slots.insert(at, Slot { item, count }),
        }
    }
}

fn store_code(error: UpdateError) -> Code {
    match error {
        UpdateError::Refused(code) => code,
        UpdateError::Store(error) => error.code(),
    }
}

/// The player's items, ordered by item id, and the pack's version.
#[mortar::handler("pack.query")]
async fn query(ctx: Ctx, _req: QueryReq) -> Result<QueryResp, Code> {
    let user = ctx.user_id().ok_or(Code::NOT_LOGGED_IN)?;
    let Some(pack) = ctx.store::<PackDoc>().try_get(user).await? else {
        return Ok(QueryResp::default());
    };
    let items =
        pack.doc.slots.iter().map(|slot| pack::Item { item_id: slot.item, count: slot.count }).collect();
    Ok(QueryResp { items, version: pack.version })
}

/// Uses `count` of an item the table marks usable: `BAD_REQUEST` for a count of 0, an unknown
/// item or one that is not usable; `NOT_ENOUGH_ITEMS` when the pack has fewer.
#[mortar::handler("pack.use")]
async fn use_item(ctx: Ctx, req: UseReq) -> Result<UseResp, Failure> {
    let user = ctx.user_id().ok_or(Code::NOT_LOGGED_IN)?;
    if req.count == 0 {
        return Err(Code::BAD_REQUEST.because("count must be at least 1"));
    }
    match ctx.table::<Item>().get(u64::from(req.item_id)) {
        None => return Err(Code::BAD_REQUEST.because(format!("no item {}", req.item_id))),
        Some(item) if !item.usable => {
            return Err(Code::BAD_REQUEST.because(format!("item {} is not usable", req.item_id)));
        }
        Some(_) => {}
    }
    let used = ctx
        .store::<PackDoc>()
        .update(user, |pack| {
            let remaining = pack.count(req.item_id).checked_sub(req.count).ok_or(NOT_ENOUGH_ITEMS)?;
            pack.set(req.item_id, remaining);
            Ok(remaining)
        })
        .await;
    match used {
        Ok((_, remaining)) => Ok(UseResp { item_id: req.item_id, remaining }),
        // No pack yet: nothing to use.
        Err(UpdateError::Store(mortar::store::StoreError::NotFound))
        | Err(UpdateError::Refused(NOT_ENOUGH_ITEMS)) => {
            Err(NOT_ENOUGH_ITEMS
                .because(format!("fewer than {} of item {} in the pack", req.count, req.item_id)))
        }
        Err(error) => Err(store_code(error).into()),
    }
}

/// Adds `items` to a player's pack once per `grant_id`: `granted = false` when that grant was
/// added before. The whole grant is refused (`PACK_FULL`) when an item would pass its
/// `max_stack`, and with `BAD_REQUEST` for an unknown item, a count of 0, no items or too many,
/// or a grant id that is empty or longer than [`MAX_GRANT_ID_BYTES`]. The owner then gets
/// `pack.changed` with the new counts.
#[mortar::handler("pack.add_items", internal)]
async fn add_items(ctx: Ctx, req: AddItemsReq) -> Result<AddItemsResp, Code> {
    let user = match req.user_id {
        0 => ctx.user_id().ok_or(Code::BAD_REQUEST)?,
        user => user,
    };
    if req.grant_id.is_empty() || req.grant_id.len() > MAX_GRANT_ID_BYTES {
        return Err(Code::BAD_REQUEST);
    }
    if req.items.is_empty() || req.items.len() > MAX_GRANT_ENTRIES {
        return Err(Code::BAD_REQUEST);
    }
    let adds = summed(&ctx, &req.items).map_err(|problem| match problem {
        Problem::Unknown(_) | Problem::Zero(_) => Code::BAD_REQUEST,
        Problem::OverStack(..) => PACK_FULL,
    })?;
    let grant_id = req.grant_id;
    let (_, changed) = ctx
        .store::<PackDoc>()
        .upsert(user, |pack| {
            if pack.grants.contains(&grant_id) {
                return Ok(None);
            }
            let mut changed = Vec::with_capacity(adds.len());
            for &(item, count, max_stack) in &adds {
                let total = pack
                    .count(item)
                    .checked_add(count)
                    .filter(|total| *total <= max_stack)
                    .ok_or(PACK_FULL)?;
                changed.push(pack::Item { item_id: item, count: total });
            }
            for item in &changed {
                pack.set(item.item_id, item.count);
            }
            pack.grants.push_back(grant_id.clone());
            while pack.grants.len() > GRANTS_KEPT {
                pack.grants.pop_front();
            }
            Ok(Some(changed))
        })
        .await
        .map_err(store_code)?;
    let Some(items) = changed else { return Ok(AddItemsResp { granted: false }) };
    // The grant is saved: a push that does not arrive (the owner is offline, their gateway is
    // gone) takes nothing from it, and `pack.query` shows the counts.
    let _ = ctx.push(&[user], "pack.changed", &Changed { items }).await;
    Ok(AddItemsResp { granted: true })
}

/// Why items could not be granted, with the index of the entry.
enum Problem {
    /// Not in the items table.
    Unknown(usize),
    /// A count of 0.
    Zero(usize),
    /// The entries of one item add up past its `max_stack` (or past `u32::MAX`).
    OverStack(usize, u32),
}

impl Problem {
    fn describe(&self, items: &[pack::Item]) -> String {
        let item = |at: usize| items.get(at).map_or(0, |entry| entry.item_id);
        match *self {
            Self::Unknown(at) => format!("items[{at}]: item {} is not in items.json", item(at)),
            Self::Zero(at) => format!("items[{at}]: count must be at least 1"),
            Self::OverStack(at, max) => {
                format!("items[{at}]: item {} would pass its max_stack of {max}", item(at))
            }
        }
    }
}

/// `items`' counts by item, summed, as (item, count, max_stack) ordered by item: every item in
/// the table, every count at least 1 and every sum at most the item's `max_stack`.
fn summed(ctx: &Ctx, items: &[pack::Item]) -> Result<Vec<(u32, u32, u32)>, Problem> {
    let table = ctx.table::<Item>();
    let mut adds: Vec<(u32, u32, u32)> = Vec::new();
    for (at, entry) in items.iter().enumerate() {
        let item = table.get(u64::from(entry.item_id)).ok_or(Problem::Unknown(at))?;
        if entry.count == 0 {
            return Err(Problem::Zero(at));
        }
        let over = || Problem::OverStack(at, item.max_stack);
        match adds.iter_mut().find(|(id, ..)| *id == entry.item_id) {
            Some((_, count, _)) => *count = count.checked_add(entry.count).ok_or_else(over)?,
            None => adds.push((entry.item_id, entry.count, item.max_stack)),
        }
        if adds.iter().any(|&(id, count, max)| id == entry.item_id && count > max) {
            return Err(over());
        }
    }
    adds.sort_unstable();
    Ok(adds)
}

/// Whether `items` could be granted to an empty pack (see `CheckItemsResp`); `BAD_REQUEST` past
/// [`MAX_GRANT_ENTRIES`].
#[mortar::handler("pack.check_items", internal)]
async fn check_items(ctx: Ctx, req: CheckItemsReq) -> Result<CheckItemsResp, Code> {
    if req.items.len() > MAX_GRANT_ENTRIES {
        return Err(Code::BAD_REQUEST);
    }
    let problem = summed(&ctx, &req.items).err().map(|problem| problem.describe(&req.items));
    Ok(CheckItemsResp { problem: problem.unwrap_or_default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stay_ordered_and_never_hold_zero() {
        let mut pack = PackDoc::default();
        pack.set(5, 2);
        pack.set(1, 7);
        pack.set(3, 0);
        assert_eq!(pack.slots, [Slot { item: 1, count: 7 }, Slot { item: 5, count: 2 }]);
        pack.set(1, 0);
        assert_eq!((pack.count(1), pack.count(5)), (0, 2));
    }

    #[test]
    fn the_built_in_items_table_loads() {
        let decoded =
            mortar::table::decode::<Item>("items.json", include_str!("../tables/items.json"), &[]).unwrap();
        let rows = decoded.rows.downcast::<mortar::table::Rows<Item>>().unwrap();
        assert!(!rows.is_empty());
        assert!(rows.get(100).is_some_and(|item| item.usable));
    }
}
