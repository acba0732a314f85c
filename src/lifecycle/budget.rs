//! The operator-wide storage budget: how much of it each report may use.
//!
//! Every report lives in etcd, whose default quota is 2 GiB. A per-report budget alone does
//! not bound the total: 10k pods at 256 KiB each would be 2.5 GB. The operator-wide budget
//! caps the sum, and shares it max-min fairly: quiet pods keep their whole history, and only
//! the largest reports are trimmed, all to the same size.

/// The default operator-wide budget: 5% of etcd's default 2 GiB quota.
pub const DEFAULT_TOTAL_BUDGET_BYTES: usize = 100 * 1024 * 1024;

/// What a report object costs beyond its history (`status`): metadata with labels and
/// managedFields, and the spec. `e2e/bench/scale` measures it as the listed object's JSON size
/// minus its status's: 1,344 B for every report of a pod with no owner (BENCHMARKS.md). Rounded
/// up for the workload labels an owned pod's report carries as well.
pub const REPORT_OVERHEAD_BYTES: usize = 1536;

/// The largest size every report can keep so that all of them together fit `budget`: reports
/// at or under it are left alone, larger ones are cut to it. `None` when everything already
/// fits. The cap can be smaller than a report's summary, which is never dropped; the sum then
/// stays above the budget by that much.
#[must_use]
pub fn fair_share(sizes: &[usize], budget: usize) -> Option<usize> {
    let total: usize = sizes.iter().sum();
    if total <= budget {
        return None;
    }
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable();
    let mut left = budget;
    for (i, &size) in sorted.iter().enumerate() {
        let sharing = sorted.len() - i;
        if size.saturating_mul(sharing) > left {
            return Some(left / sharing);
        }
        left -= size;
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::fair_share;

    #[test]
    fn quiet_reports_keep_everything_and_the_largest_share_the_rest() {
        assert_eq!(fair_share(&[10, 20, 30], 60), None);
        // 10 and 20 fit; the two large ones split what is left.
        assert_eq!(fair_share(&[10, 20, 500, 900], 130), Some(50));
        assert_eq!(fair_share(&[100, 100], 10), Some(5));
        assert_eq!(fair_share(&[], 0), None);
    }

    proptest! {
        /// Defects caught: a cap that overshoots the budget, or one smaller than needed (reports
        /// trimmed for nothing).
        #[test]
        fn the_cap_fits_the_budget_and_is_the_largest_that_does(
            sizes in proptest::collection::vec(0usize..1_000_000, 0..200),
            budget in 0usize..50_000_000,
        ) {
            let kept = |cap: usize| sizes.iter().map(|&s| s.min(cap)).sum::<usize>();
            match fair_share(&sizes, budget) {
                None => prop_assert!(sizes.iter().sum::<usize>() <= budget),
                Some(cap) => {
                    prop_assert!(kept(cap) <= budget);
                    prop_assert!(kept(cap + 1) > budget, "cap {} is not the largest that fits", cap);
                }
            }
        }
    }
}
