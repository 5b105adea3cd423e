//! Weighted rendezvous hashing: which worker a player's requests go to.
//!
//! Every candidate gets a score from the player's key and its own id; the highest wins. The
//! choice depends only on the key and the candidates, so one player's requests land on one
//! worker while it lives; when a worker joins or leaves, only the players whose winner changes
//! move, about a 1/N share, and the others stay where they are. A worker of weight w wins for
//! about w/Σw of the keys (Schindelhauer and Schomaker's logarithmic method).

/// The per-node half of the hash, computed once per node from its id.
pub fn node_hash(id: &str) -> u64 {
    // FNV-1a: stable across processes and builds, so every gateway of a cluster agrees.
    id.bytes()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
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
