//! Which of a pool's snapshots a prune destroys (issue 12): only our own, only the
//! oldest, never anything another program made.
//!
//! Ours are exactly `POOL@<prefix><digits>`: what the FREEZE takes is named
//! `POOL@<prefix><msgid>`, and msgid is the kernel's real-time clock in nanoseconds, so
//! a larger number is a later snapshot. Anything else (another prefix, our prefix
//! followed by anything but digits, a snapshot of a child dataset, another pool) belongs
//! to someone else and is never chosen, whatever `keep` is.

use std::cmp::Ordering;

/// Orders two digit strings as the numbers they spell, however long (leading zeros
/// ignored): by significant length, then by text.
fn newer(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The number part of `name` if it is one of our snapshots of `pool`.
fn ours<'a>(pool: &str, prefix: &str, name: &'a str) -> Option<&'a str> {
    let digits = name
        .strip_prefix(pool)?
        .strip_prefix('@')?
        .strip_prefix(prefix)?;
    (!digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit())).then_some(digits)
}

/// The snapshots of `pool` (full `pool@name`s, as `zfs list` gives them) to destroy so
/// that the newest `keep` of ours survive, oldest first. `keep = 0` keeps all: nothing
/// is destroyed. A listing that misses some snapshots never makes us destroy one of the
/// newest `keep`: each one chosen has `keep` newer ones of ours in the listing itself.
pub fn select(pool: &str, prefix: &str, names: &[String], keep: u32) -> Vec<String> {
    if keep == 0 {
        return Vec::new();
    }
    let mut mine: Vec<(&str, &String)> = names
        .iter()
        .filter_map(|n| ours(pool, prefix, n).map(|d| (d, n)))
        .collect();
    mine.sort_by(|a, b| newer(a.0, b.0).then_with(|| a.1.cmp(b.1)));
    mine.dedup_by(|a, b| a.1 == b.1);
    let keep = usize::try_from(keep).unwrap_or(usize::MAX);
    let destroy = mine.len().saturating_sub(keep);
    mine.into_iter()
        .take(destroy)
        .map(|(_, n)| n.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn keeps_the_newest_of_ours_and_destroys_the_oldest_first() {
        let listed = names(&[
            "tank@hvguest-300",
            "tank@hvguest-100",
            "tank@hvguest-1000",
            "tank@hvguest-200",
            "tank@hvguest-99",
        ]);
        assert_eq!(
            select("tank", "hvguest-", &listed, 3),
            names(&["tank@hvguest-99", "tank@hvguest-100"])
        );
        assert_eq!(select("tank", "hvguest-", &listed, 5), Vec::<String>::new());
        assert_eq!(select("tank", "hvguest-", &listed, 0), Vec::<String>::new());
        assert_eq!(select("tank", "hvguest-", &listed, 1).len(), 4);
    }

    #[test]
    fn never_touches_what_is_not_ours() {
        let listed = names(&[
            "tank@hvguest-1",
            "tank@hvguest-2",
            "tank@hvguest-3",
            "tank@hvguest-",
            "tank@hvguest-1a",
            "tank@hvguest-12.old",
            "tank@hvguest--5",
            "tank@Hvguest-4",
            "tank@zrepl_20260101",
            "tank@auto-2026-01-01",
            "tank/home@hvguest-5",
            "tank2@hvguest-6",
            "tan@hvguest-7",
            "tank@hvguest-+8",
            "tank@hvguest-٣",
        ]);
        assert_eq!(
            select("tank", "hvguest-", &listed, 1),
            names(&["tank@hvguest-1", "tank@hvguest-2"])
        );
    }

    #[test]
    fn numbers_compare_as_numbers_whatever_their_length() {
        let listed = names(&["p@x18446744073709551616000", "p@x9", "p@x0010", "p@x11"]);
        assert_eq!(select("p", "x", &listed, 2), names(&["p@x9", "p@x0010"]));
    }

    #[test]
    fn a_name_listed_twice_is_destroyed_once() {
        let listed = names(&["p@x1", "p@x1", "p@x2"]);
        assert_eq!(select("p", "x", &listed, 1), names(&["p@x1"]));
    }
}
