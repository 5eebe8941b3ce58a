//! The rolling update's arithmetic, as Kubernetes' deployment controller does it: how far
//! the new ReplicaSet may grow (maxSurge) and how far the old ones may shrink
//! (maxUnavailable) at each step. Pure functions over [`Rs`] views, so the bounds can be
//! tested exhaustively.

use k8s_openapi::api::apps::v1::DeploymentSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// What the arithmetic needs to know about one ReplicaSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rs {
    /// Its name.
    pub name: String,
    /// spec.replicas.
    pub replicas: i32,
    /// Available pods, never counted above spec.replicas: a status written before a
    /// scale-down must not make pods that are going look available.
    pub available: i32,
    /// Creation time (older ReplicaSets shrink first).
    pub created: jiff::Timestamp,
}

/// maxSurge and maxUnavailable resolved against the replica count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fenceposts {
    /// Pods allowed above the desired count.
    pub max_surge: i32,
    /// Pods allowed below the desired count.
    pub max_unavailable: i32,
}

/// An absolute or percent value scaled to `total`; percentages round up for surge and
/// down for unavailability, as Kubernetes does.
fn scaled(v: Option<&IntOrString>, default_percent: i32, total: i32, round_up: bool) -> i32 {
    let percent = match v {
        Some(IntOrString::Int(n)) => return (*n).max(0),
        Some(IntOrString::String(s)) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<i32>().ok())
            .unwrap_or(default_percent),
        None => default_percent,
    };
    let product = i64::from(percent.max(0)) * i64::from(total.max(0));
    let value = if round_up {
        (product + 99) / 100
    } else {
        product / 100
    };
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// Resolves a Deployment's rolling-update bounds (both zero would deadlock a rollout, so
/// unavailability then becomes 1, as in Kubernetes).
pub fn fenceposts(spec: &DeploymentSpec) -> Fenceposts {
    let replicas = spec.replicas.unwrap_or(1);
    let rolling = spec
        .strategy
        .as_ref()
        .filter(|s| s.type_.as_deref() != Some("Recreate"))
        .and_then(|s| s.rolling_update.as_ref());
    let surge = rolling.and_then(|r| r.max_surge.as_ref());
    let unavailable = rolling.and_then(|r| r.max_unavailable.as_ref());
    if spec
        .strategy
        .as_ref()
        .is_some_and(|s| s.type_.as_deref() == Some("Recreate"))
    {
        return Fenceposts {
            max_surge: 0,
            max_unavailable: replicas.max(0),
        };
    }
    let max_surge = scaled(surge, 25, replicas, true);
    let mut max_unavailable = scaled(unavailable, 25, replicas, false);
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    Fenceposts {
        max_surge,
        max_unavailable,
    }
}

/// The size the new ReplicaSet may grow to now: up to `replicas + maxSurge` pods in all.
pub fn new_rs_size(replicas: i32, f: Fenceposts, new: &Rs, all: &[Rs]) -> i32 {
    if new.replicas >= replicas {
        return replicas;
    }
    let current: i32 = all.iter().map(|r| r.replicas).sum();
    let max_total = replicas + f.max_surge;
    if current >= max_total {
        return new.replicas;
    }
    new.replicas + (max_total - current).min(replicas - new.replicas)
}

/// How to shrink the old ReplicaSets now without going below `replicas - maxUnavailable`
/// available pods: first the old ReplicaSets' unavailable pods (oldest ReplicaSet first),
/// then available ones down to the bound. Returns (name, new size) for each one to change.
pub fn old_rs_sizes(
    replicas: i32,
    f: Fenceposts,
    new: Option<&Rs>,
    olds: &[Rs],
) -> Vec<(String, i32)> {
    let old_pods: i32 = olds.iter().map(|r| r.replicas).sum();
    if old_pods == 0 {
        return Vec::new();
    }
    let new_replicas = new.map_or(0, |n| n.replicas);
    let new_available = new.map_or(0, |n| n.available);
    let all_pods = old_pods + new_replicas;
    let min_available = replicas - f.max_unavailable;
    let new_unavailable = new_replicas - new_available;
    let max_scaled_down = all_pods - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Vec::new();
    }
    let mut olds: Vec<Rs> = olds.to_vec();
    olds.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));
    let original: Vec<i32> = olds.iter().map(|r| r.replicas).collect();

    // Unavailable old pods cost nothing to remove.
    let mut cleaned = 0;
    for rs in olds.iter_mut() {
        if cleaned >= max_scaled_down {
            break;
        }
        let unhealthy = rs.replicas - rs.available;
        if rs.replicas == 0 || unhealthy <= 0 {
            continue;
        }
        let n = (max_scaled_down - cleaned).min(unhealthy);
        rs.replicas -= n;
        cleaned += n;
    }

    let available: i32 = olds
        .iter()
        .map(|r| r.available.min(r.replicas))
        .sum::<i32>()
        + new_available;
    if available > min_available {
        let total = available - min_available;
        let mut scaled = 0;
        for rs in olds.iter_mut() {
            if scaled >= total {
                break;
            }
            if rs.replicas == 0 {
                continue;
            }
            let n = rs.replicas.min(total - scaled);
            rs.replicas -= n;
            scaled += n;
        }
    }
    olds.into_iter()
        .zip(original)
        .filter(|(rs, was)| rs.replicas != *was)
        .map(|(rs, _)| (rs.name, rs.replicas))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> DeploymentSpec {
        serde_json::from_value(serde_json::json!({
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "x"}},
            "template": {},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {
                "maxSurge": surge, "maxUnavailable": unavailable}},
        }))
        .expect("spec")
    }

    fn rs(name: &str, replicas: i32, available: i32, age_s: i64) -> Rs {
        Rs {
            name: name.into(),
            replicas,
            available,
            created: jiff::Timestamp::from_second(1_000_000 - age_s).expect("time"),
        }
    }

    #[test]
    fn percentages_round_surge_up_and_unavailability_down() {
        let s = |p: &str| IntOrString::String(p.into());
        assert_eq!(
            fenceposts(&spec(10, s("25%"), s("25%"))),
            Fenceposts {
                max_surge: 3,
                max_unavailable: 2
            }
        );
        assert_eq!(
            fenceposts(&spec(3, s("25%"), s("25%"))),
            Fenceposts {
                max_surge: 1,
                max_unavailable: 0
            }
        );
        assert_eq!(
            fenceposts(&spec(3, IntOrString::Int(0), IntOrString::Int(0))),
            Fenceposts {
                max_surge: 0,
                max_unavailable: 1
            },
            "both zero would never progress"
        );
        assert_eq!(
            fenceposts(&spec(4, IntOrString::Int(2), s("50%"))),
            Fenceposts {
                max_surge: 2,
                max_unavailable: 2
            }
        );
    }

    #[test]
    fn the_new_set_grows_only_within_the_surge() {
        let f = Fenceposts {
            max_surge: 1,
            max_unavailable: 0,
        };
        let new = rs("new", 0, 0, 0);
        let all = [rs("old", 3, 3, 10), new.clone()];
        assert_eq!(new_rs_size(3, f, &new, &all), 1);
        let new = rs("new", 1, 0, 0);
        let all = [rs("old", 3, 3, 10), new.clone()];
        assert_eq!(new_rs_size(3, f, &new, &all), 1, "4 pods is the most");
        let new = rs("new", 5, 5, 0);
        assert_eq!(
            new_rs_size(3, f, &new, std::slice::from_ref(&new)),
            3,
            "shrinks to replicas"
        );
    }

    #[test]
    fn old_sets_shrink_only_down_to_the_availability_bound() {
        let f = Fenceposts {
            max_surge: 1,
            max_unavailable: 0,
        };
        // The new pod is not available yet: nothing may go.
        let new = rs("new", 1, 0, 0);
        assert!(old_rs_sizes(3, f, Some(&new), &[rs("old", 3, 3, 10)]).is_empty());
        // It is available: one old pod may go.
        let new = rs("new", 1, 1, 0);
        assert_eq!(
            old_rs_sizes(3, f, Some(&new), &[rs("old", 3, 3, 10)]),
            vec![("old".to_string(), 2)]
        );
    }

    #[test]
    fn unavailable_old_pods_go_first_and_oldest_sets_first() {
        let f = Fenceposts {
            max_surge: 1,
            max_unavailable: 1,
        };
        let new = rs("new", 2, 0, 0);
        let olds = [rs("older", 2, 0, 20), rs("old", 2, 2, 10)];
        // 6 pods, bound 3, the new set's 2 pods unavailable: one pod may go, and it is
        // one of the older set's unavailable ones.
        let plan = old_rs_sizes(4, f, Some(&new), &olds);
        assert_eq!(plan, vec![("older".to_string(), 1)]);
    }

    /// Simulates a rollout step by step (pods become available as soon as they exist) and
    /// checks that the bounds hold at every step and that it finishes.
    #[test]
    fn a_simulated_rollout_stays_within_both_bounds() {
        for (replicas, surge, unavailable) in
            [(3, 1, 0), (3, 0, 1), (10, 3, 2), (5, 2, 2), (1, 1, 0)]
        {
            let f = Fenceposts {
                max_surge: surge,
                max_unavailable: unavailable,
            };
            let mut old = rs("old", replicas, replicas, 10);
            let mut new = rs("new", 0, 0, 0);
            for _ in 0..100 {
                let size = new_rs_size(replicas, f, &new, &[old.clone(), new.clone()]);
                new.replicas = size;
                assert!(old.replicas + new.replicas <= replicas + surge);
                for (_, n) in old_rs_sizes(replicas, f, Some(&new), &[old.clone()]) {
                    old.replicas = n;
                    old.available = old.available.min(n);
                }
                assert!(old.available + new.available >= replicas - unavailable);
                new.available = new.replicas;
                old.available = old.replicas;
                if new.replicas == replicas && old.replicas == 0 {
                    break;
                }
            }
            assert_eq!(
                (old.replicas, new.replicas),
                (0, replicas),
                "{replicas}/{surge}/{unavailable}"
            );
        }
    }
}
