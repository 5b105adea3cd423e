//! The group module in `mortar dev` (embedded store), through real WebSocket clients: a group's
//! message reaches every online member once and no one outside, leave and kick stop delivery,
//! blocks hold, ownership passes on, limits hold (small ones: every node here has its own
//! `[modules.group]`).
#![allow(clippy::unwrap_used)]

use mortar_cli::client::Client;
use mortar_group::group::{
    CreateReq, CreateResp, Done, GroupReq, Joined, KickReq, Member, MembersResp, MineReq, MineResp, Role,
    Said, SayReq,
};
use mortar_pb::ErrorCode;
use mortar_tests::{DevNode, no_push, push_of, signed_up};
use prost::Message as _;
use serde_json::json;
use std::time::Duration;

/// Every node of this binary: cheap argon2, no registration limit (the races register many players
/// from one address); 4 members a group, 2 groups a player.
async fn node() -> DevNode {
    DevNode::with_config(|config| {
        config.modules.insert("user".into(), json!({ "argon2_memory_kib": 1024, "argon2_iterations": 1, "register_per_ip": 0, "register_per_sec": 0 }));
        config.modules.insert(
            "group".into(),
            json!({ "max_members": 4, "max_groups_per_user": 2, "max_name_chars": 8, "max_text_chars": 20 }),
        );
    })
    .await
}

async fn create(client: &mut Client, name: &str) -> Result<u64, i32> {
    let created: Result<CreateResp, i32> =
        client.call("group.create", &CreateReq { name: name.into() }).await.unwrap();
    created.map(|created| created.group_id)
}

async fn act(client: &mut Client, route: &str, group_id: u64) -> Result<(), i32> {
    let done: Result<Done, i32> = client.call(route, &GroupReq { group_id }).await.unwrap();
    done.map(|_| ())
}

async fn kick(client: &mut Client, group_id: u64, user_id: u64) -> Result<(), i32> {
    let done: Result<Done, i32> = client.call("group.kick", &KickReq { group_id, user_id }).await.unwrap();
    done.map(|_| ())
}

/// `group.say` from `client`: the sender's own `group.message` when it came before the reply.
async fn say(client: &mut Client, group_id: u64, text: &str) -> Result<Option<Said>, i32> {
    let mut early = None;
    let body = SayReq { group_id, text: text.into() }.encode_to_vec().into();
    let reply = client
        .request("group", "say", body, |push| {
            if (push.main_type.as_str(), push.sub_type.as_str()) == ("group", "message") {
                assert!(early.replace(Said::decode(push.data).unwrap()).is_none(), "one copy");
            }
        })
        .await
        .unwrap();
    match reply.code {
        0 => Ok(early),
        code => Err(code),
    }
}

/// `(user, name, role)` of each member, as `group.members` answers `client`.
async fn members(client: &mut Client, group_id: u64) -> Result<Vec<(u64, String, Role)>, i32> {
    let listed: Result<MembersResp, i32> =
        client.call("group.members", &GroupReq { group_id }).await.unwrap();
    listed.map(|listed| {
        listed
            .members
            .into_iter()
            .map(|Member { user_id, name, role, online }| {
                assert!(online, "every member of these tests is online");
                (user_id, name, Role::try_from(role).unwrap())
            })
            .collect()
    })
}

/// The one `group.message` `client` gets (`early`, when it came already): no second one follows.
async fn heard(client: &mut Client, early: Option<Said>) -> Said {
    let said = match early {
        Some(said) => said,
        None => Said::decode(push_of(client, "group.message").await.data).unwrap(),
    };
    no_push(client, "group.message", Duration::from_millis(200)).await;
    said
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reaches_every_member_once_and_leave_kick_and_block_stop_it() {
    let node = node().await;
    let (mut alice, a) = signed_up(&node.url(), "alice").await;
    let (mut bob, b) = signed_up(&node.url(), "bob").await;
    let (mut carol, c) = signed_up(&node.url(), "carol").await;
    let (mut dave, _) = signed_up(&node.url(), "dave").await;
    let group = create(&mut alice, "Guild").await.unwrap();
    assert!(group > 0 && group < 1 << 53);
    act(&mut bob, "group.join", group).await.unwrap();
    act(&mut carol, "group.join", group).await.unwrap();
    act(&mut carol, "group.join", group).await.unwrap();
    assert_eq!(
        members(&mut bob, group).await.unwrap(),
        [
            (a, "alice".into(), Role::Owner),
            (b, "bob".into(), Role::Member),
            (c, "carol".into(), Role::Member)
        ]
    );
    let mine: Result<MineResp, i32> = carol.call("group.mine", &MineReq {}).await.unwrap();
    assert_eq!(
        mine.unwrap().groups,
        [Joined { group_id: group, name: "Guild".into(), role: Role::Member.into() }]
    );

    // Everyone in it hears it once, the sender too; Dave, outside, does not.
    let mut early = say(&mut alice, group, "hello all").await.unwrap();
    for member in [&mut alice, &mut bob, &mut carol] {
        let said = heard(member, early.take()).await;
        assert_eq!(
            (said.group_id, said.from, said.name.as_str(), said.text.as_str()),
            (group, a, "alice", "hello all")
        );
        assert!(said.sent_at > 0);
    }
    no_push(&mut dave, "group.message", Duration::from_millis(200)).await;
    assert_eq!(say(&mut dave, group, "let me in").await, Err(ErrorCode::PermissionDenied as i32));
    assert_eq!(members(&mut dave, group).await, Err(ErrorCode::PermissionDenied as i32));

    // Carol blocks Alice: Alice's messages skip her, Bob's do not.
    let blocked: Result<mortar_friend::friend::Done, i32> =
        carol.call("friend.block", &mortar_friend::friend::Target { user_id: a }).await.unwrap();
    blocked.unwrap();
    let early = say(&mut alice, group, "anyone?").await.unwrap();
    heard(&mut alice, early).await;
    assert_eq!(heard(&mut bob, None).await.text, "anyone?");
    no_push(&mut carol, "group.message", Duration::from_millis(200)).await;
    let early = say(&mut bob, group, "me").await.unwrap();
    heard(&mut bob, early).await;
    assert_eq!(heard(&mut carol, None).await.from, b);

    // Only the owner kicks, and not themself; a kicked member hears no more.
    let denied = Err(ErrorCode::PermissionDenied as i32);
    assert_eq!(kick(&mut bob, group, c).await, denied);
    assert_eq!(kick(&mut alice, group, a).await, Err(ErrorCode::BadRequest as i32));
    assert_eq!(kick(&mut alice, group, 999).await, Err(ErrorCode::NotFound as i32));
    kick(&mut alice, group, c).await.unwrap();
    let mine: Result<MineResp, i32> = carol.call("group.mine", &MineReq {}).await.unwrap();
    assert!(mine.unwrap().groups.is_empty());
    assert_eq!(say(&mut carol, group, "hey").await.map(|_| ()), denied);
    // Bob leaves: he hears no more either.
    act(&mut bob, "group.leave", group).await.unwrap();
    assert_eq!(act(&mut bob, "group.leave", group).await, Err(ErrorCode::NotFound as i32));
    let early = say(&mut alice, group, "alone").await.unwrap();
    assert_eq!(heard(&mut alice, early).await.text, "alone");
    for gone in [&mut bob, &mut carol] {
        no_push(gone, "group.message", Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ownership_passes_on_and_the_last_to_leave_deletes_the_group() {
    let node = node().await;
    let (mut erin, _) = signed_up(&node.url(), "erin").await;
    let (mut finn, f) = signed_up(&node.url(), "finn").await;
    let (mut gail, g) = signed_up(&node.url(), "gail").await;
    let group = create(&mut erin, "Pals").await.unwrap();
    act(&mut finn, "group.join", group).await.unwrap();
    act(&mut gail, "group.join", group).await.unwrap();
    act(&mut erin, "group.leave", group).await.unwrap();
    assert_eq!(
        members(&mut gail, group).await.unwrap(),
        [(f, "finn".into(), Role::Owner), (g, "gail".into(), Role::Member)]
    );
    kick(&mut finn, group, g).await.unwrap();
    act(&mut finn, "group.leave", group).await.unwrap();
    assert_eq!(act(&mut gail, "group.join", group).await, Err(ErrorCode::NotFound as i32), "deleted");
    assert_eq!(act(&mut gail, "group.join", 0).await, Err(ErrorCode::NotFound as i32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_on_members_groups_names_and_texts() {
    let node = node().await;
    let (mut hank, _) = signed_up(&node.url(), "hank").await;
    let bad: Result<u64, i32> = Err(ErrorCode::BadRequest as i32);
    assert_eq!(create(&mut hank, "").await, bad);
    assert_eq!(create(&mut hank, "ninechars").await, bad, "past max_name_chars");
    assert_eq!(create(&mut hank, "a\nb").await, bad);
    let first = create(&mut hank, "eightchr").await.unwrap();
    create(&mut hank, "second").await.unwrap();
    assert_eq!(create(&mut hank, "third").await, Err(1002), "GROUP_LIMIT");
    assert_eq!(
        say(&mut hank, first, &"x".repeat(21)).await,
        Err(ErrorCode::BadRequest as i32),
        "past max_text_chars"
    );
    assert_eq!(say(&mut hank, first, " ").await, Err(ErrorCode::BadRequest as i32));
    for name in ["ivy1", "ivy2", "ivy3"] {
        let (mut member, _) = signed_up(&node.url(), name).await;
        act(&mut member, "group.join", first).await.unwrap();
    }
    let (mut late, _) = signed_up(&node.url(), "ivy4").await;
    assert_eq!(act(&mut late, "group.join", first).await, Err(1001), "GROUP_FULL");
    let mine: Result<MineResp, i32> = late.call("group.mine", &MineReq {}).await.unwrap();
    assert!(mine.unwrap().groups.is_empty(), "a refused join leaves no trace");
    let mut guest = Client::connect(&node.url()).await.unwrap();
    assert_eq!(create(&mut guest, "g").await, Err(ErrorCode::NotLoggedIn as i32));
}

/// The groups `client` is in, as `group.mine` answers.
async fn mine_ids(client: &mut Client) -> Vec<u64> {
    let mine: Result<MineResp, i32> = client.call("group.mine", &MineReq {}).await.unwrap();
    mine.unwrap().groups.into_iter().map(|joined| joined.group_id).collect()
}

/// Rounds of a join racing the last member's leave: the joiner ends in the group, or the group
/// is gone and nothing of it is left on the joiner's list; either way no slot of
/// `max_groups_per_user` is lost, and the joiner still creates as many groups as the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_racing_the_last_leave_never_burns_a_slot() {
    let node = node().await;
    let (mut owner, _) = signed_up(&node.url(), "lastone").await;
    let (mut joiner, j) = signed_up(&node.url(), "joiner").await;
    let mut joined = 0;
    for _ in 0..30 {
        let group = create(&mut owner, "Brief").await.unwrap();
        let (join, leave) =
            futures::join!(act(&mut joiner, "group.join", group), act(&mut owner, "group.leave", group));
        assert_eq!(leave, Ok(()));
        match join {
            Ok(()) => {
                joined += 1;
                assert_eq!(members(&mut joiner, group).await.unwrap(), [(j, "joiner".into(), Role::Owner)]);
                assert_eq!(mine_ids(&mut joiner).await, [group]);
                act(&mut joiner, "group.leave", group).await.unwrap();
            }
            Err(code) => {
                assert_eq!(code, ErrorCode::NotFound as i32);
                assert!(mine_ids(&mut joiner).await.is_empty());
                assert_eq!(act(&mut joiner, "group.join", group).await, Err(ErrorCode::NotFound as i32));
            }
        }
    }
    println!("{joined} of 30 joins came before the leave");
    // Both slots are free.
    create(&mut joiner, "one").await.unwrap();
    create(&mut joiner, "two").await.unwrap();
}
