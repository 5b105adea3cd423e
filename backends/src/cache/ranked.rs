//! The memory cache's sorted sets: an order-statistic tree (indexset's B-tree with a Fenwick index
//! over its nodes, O(log n) rank) beside a map from member to score, in the order Redis keeps
//! (score, then member bytes).

use indexset::BTreeSet;
use mortar_abi::cache::{CacheError, MAX_SCORE, SortedAnswer, SortedOp};
use std::{collections::HashMap, ops::Bound, sync::Arc};

/// One sorted set.
#[derive(Default)]
pub(super) struct Ranked {
    scores: HashMap<Arc<str>, i64>,
    order: BTreeSet<(i64, Arc<str>)>,
}

impl Ranked {
    pub(super) fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// Sets `member`'s score; whether it was added.
    fn put(&mut self, member: &str, score: i64) -> bool {
        match self.scores.get_key_value(member) {
            Some((member, old)) => {
                let member = member.clone();
                self.order.remove(&(*old, member.clone()));
                self.order.insert((score, member.clone()));
                self.scores.insert(member, score);
                false
            }
            None => {
                let member: Arc<str> = member.into();
                self.order.insert((score, member.clone()));
                self.scores.insert(member, score);
                true
            }
        }
    }

    /// How many members sort before the first whose score is at least `score`.
    fn below(&self, score: i64) -> usize {
        self.order.rank(&(score, Arc::from("")))
    }

    /// The positions (ascending order) of the members within `min`..`max`.
    fn positions(&self, min: Bound<i64>, max: Bound<i64>) -> std::ops::Range<usize> {
        let len = self.order.len();
        let above = |score: i64| score.checked_add(1).map_or(len, |next| self.below(next));
        let from = match min {
            Bound::Included(score) => self.below(score),
            Bound::Excluded(score) => above(score),
            Bound::Unbounded => 0,
        };
        let to = match max {
            Bound::Included(score) => above(score),
            Bound::Excluded(score) => self.below(score),
            Bound::Unbounded => len,
        };
        from..to.max(from)
    }

    fn members(
        &self,
        positions: std::ops::Range<usize>,
        descending: bool,
        limit: usize,
    ) -> Vec<(String, i64)> {
        let range = self.order.range_idx(positions);
        let pair = |(score, member): &(i64, Arc<str>)| (member.to_string(), *score);
        if descending {
            range.rev().take(limit).map(pair).collect()
        } else {
            range.take(limit).map(pair).collect()
        }
    }

    pub(super) fn run(&mut self, key: &str, op: SortedOp) -> Result<SortedAnswer, CacheError> {
        let len = self.order.len();
        let clamp = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Ok(match op {
            SortedOp::Add(entries) => SortedAnswer::Count(
                entries.iter().filter(|(member, score)| self.put(member, *score)).count() as u64,
            ),
            SortedOp::Incr { member, by } => {
                let old = self.scores.get(member.as_str()).copied().unwrap_or(0);
                let new = old.checked_add(by).filter(|new| new.abs() <= MAX_SCORE).ok_or_else(|| {
                    CacheError::Internal(format!("`{key}`: the score of `{member}` would leave ±{MAX_SCORE}"))
                })?;
                self.put(&member, new);
                SortedAnswer::Score(Some(new))
            }
            SortedOp::Remove(members) => {
                let mut removed = 0;
                for member in members {
                    if let Some((member, score)) = self.scores.remove_entry(member.as_str()) {
                        self.order.remove(&(score, member));
                        removed += 1;
                    }
                }
                SortedAnswer::Count(removed)
            }
            SortedOp::Score(member) => SortedAnswer::Score(self.scores.get(member.as_str()).copied()),
            SortedOp::Rank { member, descending } => {
                SortedAnswer::Rank(self.scores.get_key_value(member.as_str()).map(|(member, score)| {
                    let rank = self.order.rank(&(*score, member.clone()));
                    (if descending { len - 1 - rank } else { rank }) as u64
                }))
            }
            SortedOp::RangeByRank { start, count, descending } => {
                let start = clamp(start).min(len);
                let end = start.saturating_add(clamp(count)).min(len);
                let positions = if descending { len - end..len - start } else { start..end };
                SortedAnswer::Members(self.members(positions, descending, usize::MAX))
            }
            SortedOp::RangeByScore { min, max, descending, limit } => {
                SortedAnswer::Members(self.members(self.positions(min, max), descending, clamp(limit)))
            }
            SortedOp::Count { min, max } => SortedAnswer::Count(self.positions(min, max).len() as u64),
            SortedOp::Len => SortedAnswer::Count(len as u64),
            _ => return Err(CacheError::Internal("a sorted-set operation this cache does not know".into())),
        })
    }
}
