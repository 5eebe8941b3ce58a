//! Proportional scaling: a Deployment scaled in the middle of a rollout spreads the change
//! over its active ReplicaSets in proportion to their sizes, as Kubernetes does, so that
//! neither the old nor the new version takes the whole change. Pure functions.

/// One active ReplicaSet as proportional scaling sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sized {
    /// Its name.
    pub name: String,
    /// spec.replicas.
    pub replicas: i32,
    /// The `deployment.kubernetes.io/max-replicas` annotation: the Deployment's size plus
    /// surge when this set was last scaled.
    pub max_replicas: Option<i32>,
    /// Creation time (breaks ties between equal sizes).
    pub created: jiff::Timestamp,
}

/// The share of `to_add` that `rs` takes, bounded by what is left to add.
fn proportion(rs: &Sized, allowed_size: i32, status_replicas: i32, to_add: i32, added: i32) -> i32 {
    if rs.replicas == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = if allowed_size == 0 {
        -rs.replicas
    } else {
        let annotated = rs.max_replicas.unwrap_or(status_replicas);
        if annotated == 0 {
            0
        } else {
            let size = f64::from(rs.replicas) * f64::from(allowed_size) / f64::from(annotated);
            size.round() as i32 - rs.replicas
        }
    };
    let left = to_add - added;
    if to_add > 0 {
        fraction.min(left)
    } else {
        fraction.max(left)
    }
}

/// New sizes for the active ReplicaSets when the Deployment wants `replicas` (allowing
/// `max_surge` more) and they hold another total. `status_replicas` stands in for a set
/// without the max-replicas annotation. The rounding leftover goes to the largest set
/// (the newest of equals when growing, the oldest when shrinking).
pub fn distribute(
    replicas: i32,
    max_surge: i32,
    status_replicas: i32,
    active: &[Sized],
) -> Vec<(String, i32)> {
    let total: i32 = active.iter().map(|r| r.replicas).sum();
    let allowed_size = if replicas > 0 {
        replicas + max_surge
    } else {
        0
    };
    let to_add = allowed_size - total;
    let mut sets: Vec<&Sized> = active.iter().collect();
    if to_add > 0 {
        sets.sort_by(|a, b| b.replicas.cmp(&a.replicas).then(b.created.cmp(&a.created)));
    } else {
        sets.sort_by(|a, b| b.replicas.cmp(&a.replicas).then(a.created.cmp(&b.created)));
    }
    let mut added = 0;
    let mut sizes: Vec<(String, i32)> = Vec::with_capacity(sets.len());
    for rs in &sets {
        let p = proportion(rs, allowed_size, status_replicas, to_add, added);
        sizes.push((rs.name.clone(), rs.replicas + p));
        added += p;
    }
    if let Some(first) = sizes.first_mut()
        && to_add != 0
    {
        first.1 = (first.1 + to_add - added).max(0);
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, replicas: i32, max: i32, age_s: i64) -> Sized {
        Sized {
            name: name.into(),
            replicas,
            max_replicas: Some(max),
            created: jiff::Timestamp::from_second(1_000_000 - age_s).expect("time"),
        }
    }

    fn size_of(plan: &[(String, i32)], name: &str) -> i32 {
        plan.iter()
            .find(|(n, _)| n == name)
            .map(|p| p.1)
            .expect("in plan")
    }

    #[test]
    fn scaling_up_mid_rollout_grows_both_versions_in_proportion() {
        // Kubernetes' documented example: 10 replicas, maxSurge 3, rolling with 8 old and
        // 5 new; scaled to 15 → allowed 18 (maxSurge 3 of 15 rounds up to 4: 19).
        let active = [set("old", 8, 13, 10), set("new", 5, 13, 0)];
        let plan = distribute(15, 4, 13, &active);
        let (old, new) = (size_of(&plan, "old"), size_of(&plan, "new"));
        assert_eq!(old + new, 19);
        assert!(old > 8 && new > 5, "both grow: {plan:?}");
        assert_eq!((old, new), (12, 7));
    }

    #[test]
    fn scaling_down_shrinks_both_and_never_below_zero() {
        let active = [set("old", 6, 13, 10), set("new", 7, 13, 0)];
        let plan = distribute(5, 2, 13, &active);
        let (old, new) = (size_of(&plan, "old"), size_of(&plan, "new"));
        assert_eq!(old + new, 7);
        assert!(old >= 0 && new >= 0 && old < 6 && new < 7, "{plan:?}");
        let plan = distribute(0, 0, 13, &active);
        assert_eq!(size_of(&plan, "old") + size_of(&plan, "new"), 0);
    }

    #[test]
    fn the_leftover_goes_to_the_largest_set() {
        let active = [set("a", 1, 3, 30), set("b", 1, 3, 20), set("c", 1, 3, 10)];
        let plan = distribute(4, 0, 3, &active);
        let total: i32 = plan.iter().map(|p| p.1).sum();
        assert_eq!(total, 4);
    }
}
