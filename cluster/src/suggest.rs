//! Did-you-mean: the reasons of `NO_ROUTE` replies, with the served name closest to the one a
//! client asked for when it looks like a typo (`no worker serves module "gret" (did you mean
//! "greet"?)`).
//!
//! Only names a client may reach are ever suggested (never an internal route), so a reason says
//! nothing the client could not learn by asking.

/// The optimal string alignment distance between `a` and `b`: the fewest insertions, deletions
/// and substitutions of one character, and swaps of two adjacent ones, that turn `a` into `b`
/// (Levenshtein's distance, with a swap counted as one edit: `sya` is one edit from `say`).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // Three rows of the classic table: the one before the previous (for swaps), the previous, this.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut row = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        row[0] = i;
        for j in 1..=b.len() {
            let substitution = usize::from(a[i - 1] != b[j - 1]);
            row[j] = (previous[j] + 1).min(row[j - 1] + 1).min(previous[j - 1] + substitution);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                row[j] = row[j].min(before[j - 2] + 1);
            }
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut row);
    }
    previous[b.len()]
}

/// The name among `candidates` closest to `wanted`, when it is close enough to be a likely typo:
/// at most one edit per three characters of `wanted`, and at least one. Of equally close names
/// the first in alphabetical order wins, so the answer does not depend on `candidates`' order.
pub fn closest<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let length = wanted.chars().count();
    let most = (length / 3).max(1);
    candidates
        .into_iter()
        // A length difference is a lower bound of the distance: skip the table when it is too far.
        .filter(|candidate| candidate.chars().count().abs_diff(length) <= most)
        .map(|candidate| (edit_distance(wanted, candidate), candidate))
        .filter(|(distance, _)| (1..=most).contains(distance))
        .min()
        .map(|(_, candidate)| candidate)
}

/// The reason of a `NO_ROUTE` for module `main`, which none of `served` (the modules clients may
/// reach) is.
pub fn no_module<'a>(main: &str, served: impl IntoIterator<Item = &'a str>) -> String {
    match closest(main, served) {
        Some(near) => format!("no worker serves module {main:?} (did you mean {near:?}?)"),
        None => format!("no worker serves module {main:?}"),
    }
}

/// The reason of a `NO_ROUTE` for route `main.sub` of a served module, whose client routes are
/// `subs`.
pub fn no_route<'a>(main: &str, sub: &str, subs: impl IntoIterator<Item = &'a str>) -> String {
    match closest(sub, subs) {
        Some(near) => format!("module {main:?} has no route {sub:?} (did you mean {near:?}?)"),
        None => format!("module {main:?} has no route {sub:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_insertions_deletions_substitutions_and_swaps() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("greet", "greet"), 0);
        assert_eq!(edit_distance("gret", "greet"), 1, "insertion");
        assert_eq!(edit_distance("greet", "gret"), 1, "deletion");
        assert_eq!(edit_distance("grest", "greet"), 1, "substitution");
        assert_eq!(edit_distance("sya", "say"), 1, "swap");
        assert_eq!(edit_distance("", "echo"), 4);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("ca", "abc"), 3, "a swapped pair is not edited again");
        assert_eq!(edit_distance("ünï", "uni"), 2, "characters, not bytes");
    }

    #[test]
    fn closest_suggests_only_likely_typos() {
        let modules = ["echo", "friend", "greet", "group", "mail", "pack", "user"];
        assert_eq!(closest("gret", modules), Some("greet"));
        assert_eq!(closest("usr", modules), Some("user"));
        assert_eq!(closest("frind", modules), Some("friend"));
        assert_eq!(closest("nothing", modules), None);
        assert_eq!(closest("x", modules), None);
        assert_eq!(closest("echo", modules), None, "an exact name is not a typo");
        // Equally close: the first in alphabetical order, whatever the candidates' order.
        assert_eq!(closest("bat", ["cat", "bar"]), Some("bar"));
        assert_eq!(closest("bat", ["bar", "cat"]), Some("bar"));
    }

    #[test]
    fn reasons_quote_the_names_and_suggest_when_close() {
        assert_eq!(
            no_module("gret", ["echo", "greet"]),
            r#"no worker serves module "gret" (did you mean "greet"?)"#
        );
        assert_eq!(no_module("nothing", ["echo"]), r#"no worker serves module "nothing""#);
        assert_eq!(
            no_route("echo", "sya", ["say", "node"]),
            r#"module "echo" has no route "sya" (did you mean "say"?)"#
        );
        assert_eq!(no_route("echo", "x\n", ["say"]), r#"module "echo" has no route "x\n""#);
    }
}
