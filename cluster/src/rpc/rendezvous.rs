//! Weighted rendezvous hashing: which worker a player's requests go to.
//!
//! Every candidate gets a score from the player's key and its own id; the highest wins. The
//! choice depends only on the key and the candidates, so one player's requests land on one
//! worker while it lives; when a worker joins or leaves, only the players whose winner changes
//! move, about a 1/N share, and the others stay where they are. A worker of weight w wins for
//! about w/Σw of the keys (Schindelhauer and Schomaker's logarithmic method).

/// The per-node half of the hash, computed once per node from its id.
pub fn node_hash(id: &str) -> u64 {
    fnv(id.as_bytes())
}

/// The score of a node (by its [`node_hash`] and weight) for `key`; the highest wins.
pub fn score(key: u64, node: u64, weight: u32) -> f64 {
    let mixed = mix(key ^ mix(node));
    // A uniform number in (0, 1) from the top 53 bits.
    let uniform = ((mixed >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight) / -uniform.ln()
}

/// The index of the winner for `key` among `(node hash, weight)` candidates; `None` when there are
/// none.
pub fn pick(key: u64, candidates: impl IntoIterator<Item = (u64, u32)>) -> Option<usize> {
    candidates
        .into_iter()
        .map(|(node, weight)| score(key, node, weight))
        .enumerate()
        .max_by(|(_, a), (_, b)| a.total_cmp(b))
        .map(|(index, _)| index)
}

/// The rendezvous key of a request routed by field `field`: an FNV-1a hash of the field's bytes (a
/// string, bytes, fixed32 or fixed64 field) or its varint value (an integer field), read from the
/// encoded request without decoding the rest; the last occurrence wins, as protobuf decoders do.
/// A request without the field (its value is the default: `""` or 0) gets key 0. `None` when
/// `data` is not a well-formed message.
pub fn field_key(data: &[u8], field: u32) -> Option<u64> {
    let mut rest = data;
    let mut key = 0;
    while !rest.is_empty() {
        let tag = varint(&mut rest)?;
        let number = tag >> 3;
        let value: Option<u64> = match tag & 7 {
            0 => Some(varint(&mut rest)?),
            1 => Some(fnv(take(&mut rest, 8)?)),
            2 => {
                let len = usize::try_from(varint(&mut rest)?).ok()?;
                Some(fnv(take(&mut rest, len)?))
            }
            5 => Some(fnv(take(&mut rest, 4)?)),
            _ => return None, // groups (proto2) or not a wire type at all
        };
        if number == u64::from(field) {
            key = value?;
        }
    }
    Some(key)
}

/// Reads a base-128 varint off the front of `rest`.
fn varint(rest: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, tail) = rest.split_first()?;
        *rest = tail;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Takes `len` bytes off the front of `rest`.
fn take<'a>(rest: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    if rest.len() < len {
        return None;
    }
    let (head, tail) = rest.split_at(len);
    *rest = tail;
    Some(head)
}

/// FNV-1a: stable across processes and builds, so every gateway of a cluster agrees.
fn fnv(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}

/// splitmix64's finaliser: every input bit affects every output bit.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_key_depends_only_on_that_fields_value() {
        // Field 1 "room-1", field 2 = 150 (varint), in either order and beside other fields.
        let room = |name: &[u8], extra: &[u8]| {
            let mut data = vec![0x0a, u8::try_from(name.len()).unwrap()];
            data.extend_from_slice(name);
            data.extend_from_slice(extra);
            data
        };
        let key = field_key(&room(b"room-1", &[]), 1).unwrap();
        assert_eq!(
            field_key(&room(b"room-1", &[0x10, 0x96, 0x01]), 1),
            Some(key),
            "other fields do not count"
        );
        assert_ne!(field_key(&room(b"room-2", &[]), 1), Some(key));
        assert_eq!(field_key(&room(b"room-1", &[0x10, 0x96, 0x01]), 2), Some(150), "an integer is its value");
        assert_eq!(field_key(&[], 1), Some(0), "absent: the default value's key");
        let mut twice = room(b"room-2", &[]);
        twice.extend(room(b"room-1", &[]));
        assert_eq!(field_key(&twice, 1), Some(key), "the last occurrence wins");
        assert_eq!(field_key(&[0x0a, 9, b'x'], 1), None, "a length past the end");
        assert_eq!(field_key(&[0x0b], 1), None, "a group");
        assert_eq!(field_key(&[0x10, 0x96], 2), None, "a cut varint");
    }

    fn winners(nodes: &[(&str, u32)], keys: u64) -> Vec<usize> {
        let candidates: Vec<_> = nodes.iter().map(|(id, weight)| (node_hash(id), *weight)).collect();
        (0..keys).map(|key| pick(key, candidates.iter().copied()).unwrap()).collect()
    }

    #[test]
    fn keys_spread_by_weight() {
        let counts = |nodes: &[(&str, u32)]| {
            let mut counts = vec![0usize; nodes.len()];
            winners(nodes, 30_000).into_iter().for_each(|w| counts[w] += 1);
            counts
        };
        let even = counts(&[("w1", 1), ("w2", 1), ("w3", 1)]);
        assert!(even.iter().all(|&c| (9_000..11_000).contains(&c)), "{even:?}");
        let weighted = counts(&[("w1", 1), ("w2", 2)]);
        assert!((9_000..11_000).contains(&weighted[0]), "{weighted:?}");
    }

    #[test]
    fn a_leaving_node_moves_only_its_own_keys() {
        let before = winners(&[("w1", 1), ("w2", 1), ("w3", 1)], 10_000);
        let after = winners(&[("w1", 1), ("w3", 1)], 10_000);
        for (b, a) in before.iter().zip(&after) {
            // w1 stays index 0; w3 moves from index 2 to 1. Keys of w2 (index 1) go anywhere.
            match b {
                0 => assert_eq!(*a, 0),
                2 => assert_eq!(*a, 1),
                _ => {}
            }
        }
    }

    #[test]
    fn no_candidates_no_winner() {
        assert_eq!(pick(7, []), None);
    }
}
