//! The mail module: mail to players, with attachments claimed into the pack exactly once.
//!
//! - `mail.list {}` → `{mails}` (newest first), `mail.read {mailId}`, `mail.claim {mailId}` →
//!   `{items}`, `mail.delete {mailId}`, for a logged-in player;
//! - internal `mail.send {toUsers, title, body, attachments}` → `{mailIds}`, to players online
//!   or not (the admin API sends system mail through it), and the push `mail.new {mailId, title}`
//!   to recipients who are online.
//!
//! One document per player (id = user id) holds the mailbox; every change is a compare-and-set
//! on its version. A claim is exactly once without a transaction across the mailbox and the
//! pack: the attachments go through `pack.add_items` with the grant id `mail:MAILID`, which the
//! pack applies once, and only then is the mail marked claimed. A claim racing another, or
//! retried after a crash between the two steps, finds the grant done: it adds nothing and
//! answers `ALREADY_EXISTS`, as a claim of a mail marked claimed does.

use futures::StreamExt as _;
use mortar::{prelude::*, store::UpdateError};
use serde::{Deserialize, Serialize};
use std::time::UNIX_EPOCH;

/// The messages of `proto/mail.proto`.
pub mod mail {
    mortar::include_proto!("mail");
}

/// The pack module's messages and typed client (`pack.add_items`, `pack.check_items`).
pub mod pack {
    mortar::import_proto!("pack");
}

/// The user module's messages and typed client (`user.lookup`).
pub mod user {
    mortar::import_proto!("user");
}

use mail::{
    Attachment, ClaimReq, ClaimResp, DeleteReq, DeleteResp, ListReq, ListResp, New, ReadReq, ReadResp,
    SendReq, SendResp, Summary,
};

/// Attachments as the pack module's items.
fn pack_items(attachments: &[Attachment]) -> Vec<pack::Item> {
    attachments.iter().map(|item| pack::Item { item_id: item.item_id, count: item.count }).collect()
}

mortar::module!("mail");
mortar::export_module!();

/// `mail.send` found every recipient's mailbox full of unclaimed attachments: nothing was sent.
pub const MAILBOX_FULL: Code = Code::module(mail::ModuleCode::MailboxFull as i32);

/// `[modules.mail]`: the limits of a mailbox and of one mail.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailConfig {
    /// Mails one mailbox keeps. A new mail past it drops the oldest one with nothing left to
    /// claim; when every mail still has unclaimed attachments, that recipient gets none.
    pub max_mails: usize,
    /// The longest title, in characters (`BAD_REQUEST` past it, or for an empty title).
    pub max_title_chars: usize,
    /// The longest body, in characters.
    pub max_body_chars: usize,
    /// Attachments one mail may carry (at most 100, what one `pack.add_items` takes).
    pub max_attachments: usize,
    /// Recipients one `mail.send` may name (at most 1000, what one `user.lookup` takes).
    pub max_recipients: usize,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            max_mails: 100,
            max_title_chars: 64,
            max_body_chars: 2000,
            max_attachments: 10,
            max_recipients: 1000,
        }
    }
}

fn check_config(config: &MailConfig) -> Result<(), String> {
    if config.max_mails == 0 || config.max_title_chars == 0 || config.max_recipients == 0 {
        return Err("max_mails, max_title_chars and max_recipients must be at least 1".into());
    }
    if config.max_recipients > 1000 {
        return Err("max_recipients must be at most 1000 (what one user.lookup takes)".into());
    }
    if config.max_attachments > 100 {
        return Err("max_attachments must be at most 100 (what one pack.add_items takes)".into());
    }
    Ok(())
}

mortar::config!(MailConfig, section = "mail", check = check_config);

/// A number of one item attached to a mail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// The item (of the pack's `items.json`).
    pub item: u32,
    /// How many, at least 1.
    pub count: u32,
}

/// One mail in a mailbox.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Letter {
    /// Unique in its mailbox; random below 2^53, so JavaScript clients hold it exactly.
    pub id: u64,
    /// The title.
    pub title: String,
    /// The body.
    pub body: String,
    /// What claiming it adds to the pack.
    pub attachments: Vec<Item>,
    /// When it was sent, ms since the Unix epoch.
    pub sent_at_ms: i64,
    /// When `mail.read` first showed it; 0: never. Times rather than flags: the MongoDB
    /// emulator the tests use turns booleans written by an update into 0 and 1.
    pub read_ms: i64,
    /// When its attachments were claimed; 0: not yet.
    pub claimed_ms: i64,
}

impl Letter {
    /// Whether claiming it would still add something.
    pub fn unclaimed(&self) -> bool {
        !self.attachments.is_empty() && self.claimed_ms == 0
    }

    fn attachments(&self) -> Vec<Attachment> {
        self.attachments.iter().map(|item| Attachment { item_id: item.item, count: item.count }).collect()
    }
}

/// A player's mailbox: document id = user id.
#[derive(Clone, Debug, Default, Serialize, Deserialize, mortar::Document)]
#[document(collection = "mail")]
pub struct Mailbox {
    /// The mails, oldest first.
    pub mails: Vec<Letter>,
    /// The `dedup_key`s of the last [`MAX_SENT_KEYS`] mails sent with one, with their mail ids,
    /// oldest first.
    #[serde(default)]
    pub keys: Vec<(String, u64)>,
}

/// How many `dedup_key`s a mailbox remembers.
pub const MAX_SENT_KEYS: usize = 256;

/// What [`Mailbox::deliver`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delivered {
    /// A new mail, with this id.
    New(u64),
    /// The mailbox took a mail with the same key before: this id.
    Before(u64),
    /// The mailbox is full of unclaimed attachments.
    Full,
}

impl Mailbox {
    fn find(&self, id: u64) -> Option<&Letter> {
        self.mails.iter().find(|letter| letter.id == id)
    }

    fn find_mut(&mut self, id: u64) -> Option<&mut Letter> {
        self.mails.iter_mut().find(|letter| letter.id == id)
    }

    /// Adds `letter` with a fresh id, dropping the oldest mail with nothing to claim when the box
    /// holds `max` already; `None` when every mail still has something to claim.
    fn deliver(&mut self, mut letter: Letter, max: usize) -> Option<u64> {
        while self.mails.len() >= max {
            let at = self.mails.iter().position(|letter| !letter.unclaimed())?;
            self.mails.remove(at);
        }
        letter.id = loop {
            let id = rand::random::<u64>() % (1 << 53) + 1;
            if self.find(id).is_none() {
                break id;
            }
        };
        let id = letter.id;
        self.mails.push(letter);
        Some(id)
    }

    /// [`Mailbox::deliver`], once per `key` (none: always).
    fn deliver_once(&mut self, letter: Letter, max: usize, key: &str) -> Delivered {
        if !key.is_empty()
            && let Some((_, id)) = self.keys.iter().find(|(seen, _)| seen == key)
        {
            return Delivered::Before(*id);
        }
        let Some(id) = self.deliver(letter, max) else { return Delivered::Full };
        if !key.is_empty() {
            if self.keys.len() >= MAX_SENT_KEYS {
                self.keys.remove(0);
            }
            self.keys.push((key.to_owned(), id));
        }
        Delivered::New(id)
    }
}

fn now_ms(ctx: &Ctx) -> i64 {
    ctx.now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

/// The player's mailbox, newest first.
#[mortar::handler("mail.list")]
async fn list(ctx: Ctx, _req: ListReq) -> Result<ListResp, Code> {
    let user = ctx.user_id().ok_or(Code::NOT_LOGGED_IN)?;
    let Some(mailbox) = ctx.store::<Mailbox>().try_get(user).await? else {
        return Ok(ListResp::default());
    };
    let mails = mailbox
        .doc
        .mails
        .iter()
        .rev()
        .map(|letter| Summary {
            mail_id: letter.id,
            title: letter.title.clone(),
            read: letter.read_ms != 0,
            claimed: letter.claimed_ms != 0,
            has_attachments: !letter.attachments.is_empty(),
            sent_at: letter.sent_at_ms,
        })
        .collect();
    Ok(ListResp { mails })
}

/// One mail in full, marking it read; `NOT_FOUND` when the mailbox has no such mail.
#[mortar::handler("mail.read")]
async fn read(ctx: Ctx, req: ReadReq) -> Result<ReadResp, Code> {
    let user = ctx.user_id().ok_or(Code::NOT_LOGGED_IN)?;
    let store = ctx.store::<Mailbox>();
    let mailbox = store.try_get(user).await?.ok_or(Code::NOT_FOUND)?;
    let letter = mailbox.doc.find(req.mail_id).ok_or(Code::NOT_FOUND)?.clone();
    if letter.read_ms == 0 {
        let now = now_ms(&ctx);
        // Read or not is a courtesy: a mail deleted meanwhile, or a failed write, still shows.
        let _ = store
            .update(user, |mailbox| {
                if let Some(letter) = mailbox.find_mut(req.mail_id).filter(|letter| letter.read_ms == 0) {
                    letter.read_ms = now;
                }
                Ok(())
            })
            .await;
    }
    Ok(ReadResp {
        mail_id: letter.id,
        attachments: letter.attachments(),
        title: letter.title,
        body: letter.body,
        claimed: letter.claimed_ms != 0,
    })
}

/// Moves a mail's attachments into the pack, once. Steps:
/// 1. the mail is looked up: `NOT_FOUND` when there is none, `BAD_REQUEST` when it has no
///    attachments, `ALREADY_EXISTS` when it is marked claimed;
/// 2. `pack.add_items` with grant id `mail:MAILID` adds them, unless that grant was applied
///    before (a racing claim, or this claim before a crash); its refusals (`PACK_FULL`) pass
///    through and leave the mail unclaimed;
/// 3. the mail is marked claimed (and read).
///
/// The answer is `{items}` for the claim whose grant added the items, `ALREADY_EXISTS` for any
/// other: the items are in the pack either way.
#[mortar::handler("mail.claim")]
async fn claim(ctx: Ctx, req: ClaimReq) -> Result<ClaimResp, Code> {
    let user = ctx.user_id().ok_or(Code::NOT_LOGGED_IN)?;
    let store = ctx.store::<Mailbox>();
    let mailbox = store.try_get(user).await?.ok_or(Code::NOT_FOUND)?;
    let letter = mailbox.doc.find(req.mail_id).ok_or(Code::NOT_FOUND)?;
    if letter.attachments.is_empty() {
        return Err(Code::BAD_REQUEST);
    }
    if letter.claimed_ms != 0 {
        return Err(Code::ALREADY_EXISTS);
    }
    let items = letter.attachments();
    let grant = pack::AddItemsReq {
        grant_id: format!("mail:{}", letter.id),
        items: pack_items(&items),
        user_id: user,
    };
    let granted = pack::PackClient(&ctx).add_items(&grant).await?;
    let now = now_ms(&ctx);
    // A failed mark loses nothing: the grant is done, and the next claim finds it so (adding
    // nothing) and marks the mail then.
    let _ = store
        .update(user, |mailbox| {
            if let Some(letter) = mailbox.find_mut(req.mail_id).filter(|letter| letter.claimed_ms == 0) {
                letter.claimed_ms = now;
                if letter.read_ms == 0 {
                    letter.read_ms = now;
                }
            }
            Ok(())
        })
        .await;
    if granted.granted { Ok(ClaimResp { items }) } else { Err(Code::ALREADY_EXISTS) }
}

/// Deletes a mail, claimed or not (a mail whose attachments were not claimed takes them with
/// it); `NOT_FOUND` when there is none.
#[mortar::handler("mail.delete")]
async fn delete(ctx: Ctx, req: DeleteReq) -> Result<DeleteResp, Code> {
    let user = ctx.user_id().ok_or(Code::NOT_LOGGED_IN)?;
    let deleted = ctx
        .store::<Mailbox>()
        .update(user, |mailbox| {
            let at =
                mailbox.mails.iter().position(|letter| letter.id == req.mail_id).ok_or(Code::NOT_FOUND)?;
            mailbox.mails.remove(at);
            Ok(())
        })
        .await;
    match deleted {
        Ok(_) => Ok(DeleteResp {}),
        Err(UpdateError::Store(mortar::store::StoreError::NotFound)) => Err(Code::NOT_FOUND),
        Err(error) => Err(error.code()),
    }
}

/// Sends one mail to each of `to_users`, online or not; each gets its own mail id, and those
/// online get `mail.new`. Refused with a reason naming the field:
/// - `BAD_REQUEST` for no recipients or more than `max_recipients`, a user id 0 or twice, an empty or too
///   long title, a title with control or bidirectional-override characters, a too long body or
///   one with control characters other than newline and tab, too many attachments, or an
///   attachment `pack.check_items` refuses (an unknown item, a count of 0, counts of one item
///   past its `max_stack`: it could never be claimed);
/// - `NOT_FOUND` for a recipient without an account (`user.lookup` says who has one, when the
///   cluster serves the user module);
/// - `MAILBOX_FULL` when no recipient could take it (see [`MailConfig::max_mails`]).
#[mortar::handler("mail.send", internal)]
async fn send(ctx: Ctx, req: SendReq) -> Result<SendResp, Failure> {
    let config = ctx.config::<MailConfig>();
    check_send(&req, &config)?;
    if !req.attachments.is_empty() {
        let check = pack::CheckItemsReq { items: pack_items(&req.attachments) };
        let checked = pack::PackClient(&ctx).check_items(&check).await?;
        if let Some(rest) = checked.problem.strip_prefix("items") {
            return Err(Code::BAD_REQUEST.because(format!("attachments{rest}")));
        }
    }
    // A game whose accounts are not the user module's (no worker serves it) checks its own.
    match user::UserClient(&ctx).lookup(&user::LookupReq { user_ids: req.to_users.clone() }).await {
        Ok(known) => {
            let has_account = |user: &&u64| known.users.iter().any(|known| known.user_id == **user);
            if let Some(unknown) = req.to_users.iter().find(|user| !has_account(user)) {
                return Err(Code::NOT_FOUND.because(format!("toUsers: no player has the id {unknown}")));
            }
        }
        Err(Code::NO_ROUTE) => {}
        Err(code) => return Err(code.into()),
    }
    let letter = Letter {
        title: req.title,
        body: req.body,
        attachments: req.attachments.iter().map(|a| Item { item: a.item_id, count: a.count }).collect(),
        sent_at_ms: now_ms(&ctx),
        ..Letter::default()
    };
    let store = ctx.store::<Mailbox>();
    let max = config.max_mails;
    let key = req.dedup_key.as_str();
    let delivered: Vec<Result<Delivered, Code>> = futures::stream::iter(req.to_users.iter().copied())
        .map(|user| {
            let (store, letter) = (store.clone(), letter.clone());
            async move {
                let (_, delivered) = store
                    .upsert(user, |mailbox| Ok(mailbox.deliver_once(letter.clone(), max, key)))
                    .await
                    .map_err(|error| error.code())?;
                Ok(delivered)
            }
        })
        .buffered(32)
        .collect()
        .await;
    let delivered = delivered.into_iter().collect::<Result<Vec<Delivered>, Code>>()?;
    if delivered.iter().all(|d| *d == Delivered::Full) {
        return Err(MAILBOX_FULL.because("every recipient's mailbox is full of unclaimed attachments"));
    }
    let mail_ids: Vec<u64> = delivered
        .iter()
        .map(|d| match d {
            Delivered::New(id) | Delivered::Before(id) => *id,
            Delivered::Full => 0,
        })
        .collect();
    // The mails are saved: a push that does not arrive takes nothing from them.
    let title = &letter.title;
    let new: Vec<(u64, u64)> = req
        .to_users
        .iter()
        .zip(&delivered)
        .filter_map(|(&user, d)| match d {
            Delivered::New(id) => Some((user, *id)),
            _ => None,
        })
        .collect();
    futures::stream::iter(new.iter())
        .for_each_concurrent(32, |&(user, mail_id)| {
            let (ctx, new) = (&ctx, New { mail_id, title: title.clone() });
            async move {
                let _ = ctx.push(&[user], "mail.new", &new).await;
            }
        })
        .await;
    Ok(SendResp { mail_ids })
}

/// The checks of `mail.send` that need nothing but the request (see [`send`]).
fn check_send(req: &SendReq, config: &MailConfig) -> Result<(), Failure> {
    let bad = |reason: String| Err(Code::BAD_REQUEST.because(reason));
    let chars = |text: &str| text.chars().count();
    if req.to_users.is_empty() || req.to_users.len() > config.max_recipients {
        return bad(format!("toUsers: 1–{} recipients", config.max_recipients));
    }
    if req.to_users.contains(&0) {
        return bad("toUsers: 0 is no player's id".into());
    }
    let mut seen = std::collections::HashSet::with_capacity(req.to_users.len());
    if let Some(twice) = req.to_users.iter().find(|&&user| !seen.insert(user)) {
        return bad(format!("toUsers: {twice} is named twice (one mail each)"));
    }
    if chars(&req.dedup_key) > 128 {
        return bad("dedupKey: at most 128 characters".into());
    }
    if req.title.trim().is_empty() || chars(&req.title) > config.max_title_chars {
        return bad(format!("title: 1–{} characters, not only spaces", config.max_title_chars));
    }
    // Terminal escapes, NUL, and text that reads backwards from here on: a title must look like
    // what it says in every client and log.
    if let Some(c) = req.title.chars().find(|&c| c.is_control() || BIDI_CONTROLS.contains(&c)) {
        return bad(format!(
            "title: must not hold control or text-direction characters (U+{:04X})",
            u32::from(c)
        ));
    }
    if chars(&req.body) > config.max_body_chars {
        return bad(format!("body: at most {} characters", config.max_body_chars));
    }
    if let Some(c) =
        req.body.chars().find(|&c| (c.is_control() && c != '\n' && c != '\t') || BIDI_CONTROLS.contains(&c))
    {
        return bad(format!(
            "body: must not hold control or text-direction characters but newlines and tabs (U+{:04X})",
            u32::from(c)
        ));
    }
    if req.attachments.len() > config.max_attachments {
        return bad(format!("attachments: at most {}", config.max_attachments));
    }
    Ok(())
}

/// The characters that change the direction of the text after them (Unicode's bidirectional
/// embeddings, overrides and isolates).
const BIDI_CONTROLS: [char; 9] = [
    '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}',
    '\u{2069}',
];

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(attachments: &[(u32, u32)], claimed_ms: i64) -> Letter {
        Letter {
            title: "t".into(),
            attachments: attachments.iter().map(|&(item, count)| Item { item, count }).collect(),
            claimed_ms,
            ..Letter::default()
        }
    }

    #[test]
    fn a_key_delivers_once_and_the_oldest_keys_are_forgotten() {
        let mut mailbox = Mailbox::default();
        let Delivered::New(first) = mailbox.deliver_once(letter(&[(1, 5)], 0), 1000, "k") else { panic!() };
        assert_eq!(mailbox.deliver_once(letter(&[(1, 5)], 0), 1000, "k"), Delivered::Before(first));
        assert_eq!(mailbox.mails.len(), 1);
        assert!(matches!(mailbox.deliver_once(letter(&[], 0), 1000, ""), Delivered::New(_)));
        assert!(
            matches!(mailbox.deliver_once(letter(&[], 0), 1000, ""), Delivered::New(_)),
            "no key: always"
        );
        for n in 0..MAX_SENT_KEYS {
            mailbox.deliver_once(letter(&[], 0), 1000, &n.to_string());
        }
        assert_eq!(mailbox.keys.len(), MAX_SENT_KEYS);
        assert!(matches!(mailbox.deliver_once(letter(&[], 0), 1000, "k"), Delivered::New(_)), "forgotten");
    }

    #[test]
    fn a_full_mailbox_drops_the_oldest_mail_with_nothing_to_claim() {
        let mut mailbox = Mailbox::default();
        let unclaimed = mailbox.deliver(letter(&[(1, 5)], 0), 3).unwrap();
        let plain = mailbox.deliver(letter(&[], 0), 3).unwrap();
        let claimed = mailbox.deliver(letter(&[(1, 5)], 9), 3).unwrap();
        assert_ne!(unclaimed, plain);
        let newest = mailbox.deliver(letter(&[(2, 1)], 0), 3).unwrap();
        let ids: Vec<u64> = mailbox.mails.iter().map(|letter| letter.id).collect();
        assert_eq!(ids, [unclaimed, claimed, newest], "the plain mail went first");
        mailbox.deliver(letter(&[(2, 1)], 0), 3).unwrap();
        assert_eq!(mailbox.deliver(letter(&[], 0), 3), None, "three unclaimed mails: full");
        assert_eq!(mailbox.mails.len(), 3);
        assert!(mailbox.mails.iter().all(|letter| letter.id < 1 << 53 && letter.id > 0));
    }

    #[test]
    fn a_mail_is_refused_naming_the_field() {
        let config = MailConfig::default();
        let why =
            |req: SendReq| check_send(&req, &config).err().map(|f| f.reason().unwrap_or_default().to_owned());
        let ok = || SendReq {
            to_users: vec![7],
            title: "Hello".into(),
            body: "line\n\tindented".into(),
            attachments: vec![],
            dedup_key: String::new(),
        };
        assert_eq!(why(ok()), None);
        assert!(why(SendReq { dedup_key: "k".repeat(129), ..ok() }).unwrap().starts_with("dedupKey"));
        assert_eq!(why(SendReq { to_users: vec![], ..ok() }).as_deref(), Some("toUsers: 1–1000 recipients"));
        assert_eq!(
            why(SendReq { to_users: vec![7, 0], ..ok() }).as_deref(),
            Some("toUsers: 0 is no player's id")
        );
        assert_eq!(
            why(SendReq { to_users: vec![7, 8, 7], ..ok() }).as_deref(),
            Some("toUsers: 7 is named twice (one mail each)")
        );
        for (title, c) in [
            ("Hi\0there", "0000"),
            ("\u{1b}[2JSystem", "001B"),
            ("tab\t", "0009"),
            ("gift \u{202E}txt.exe", "202E"),
        ] {
            let reason = why(SendReq { title: title.into(), ..ok() });
            let said = format!("title: must not hold control or text-direction characters (U+{c})");
            assert_eq!(reason, Some(said), "{title:?}");
        }
        assert!(why(SendReq { title: "x".repeat(65), ..ok() }).unwrap().starts_with("title: 1–64"));
        assert!(why(SendReq { body: "\u{1b}[31mred".into(), ..ok() }).unwrap().starts_with("body: "));
        let eleven = vec![Attachment { item_id: 100, count: 1 }; 11];
        assert_eq!(why(SendReq { attachments: eleven, ..ok() }).as_deref(), Some("attachments: at most 10"));
    }

    #[test]
    fn the_default_config_is_valid() {
        check_config(&MailConfig::default()).unwrap();
        assert!(check_config(&MailConfig { max_attachments: 101, ..MailConfig::default() }).is_err());
    }
}
