//! The replica count an autoscaler recommends, as Kubernetes' HPA computes it: the ratio
//! of the measured utilization to the target, applied to the pods measured, within a 10 %
//! tolerance, pods not yet measured filled in so that they can only temper a change;
//! bounded by min and max replicas and by how fast it may grow (double, or four, per step);
//! and stabilized — a scale down goes only as low as the highest
//! recommendation of the last window (five minutes by default), so one quiet sample never
//! shrinks what the next busy one must grow again.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Ratios this close to 1 leave the replicas as they are.
pub const TOLERANCE: f64 = 0.1;
/// The default scale-down stabilization window.
pub const DEFAULT_SCALE_DOWN_WINDOW: Duration = Duration::from_secs(300);

/// One pod as the replica calculation sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodSample {
    /// Its use of the resource (cores or bytes), None when not measured yet.
    pub usage: Option<f64>,
    /// What it requests of the resource.
    pub request: f64,
    /// Is it Ready? (For cpu, a pod that is not ready yet is not judged by its use.)
    pub ready: bool,
}

/// Whole percent of `used` over `requested`, truncated as Kubernetes truncates it.
fn utilization(used: f64, requested: f64) -> i32 {
    if requested <= 0.0 {
        return 0;
    }
    (used * 100.0 / requested) as i32
}

/// The replicas `pods` ask for at `target` percent utilization, currently `current`, and
/// the measured utilization; None when no ready pod has been measured. As Kubernetes'
/// replica calculator: pods not measured yet count as using the target on a scale down
/// and nothing on a scale up, pods not ready count as using nothing on a scale up, and a
/// recomputed ratio that falls within the tolerance or turns the other way changes
/// nothing — so missing samples can never shrink a busy workload.
pub fn replicas(current: i32, pods: &[PodSample], target: i32) -> Option<(i32, i32)> {
    let target = target.max(1);
    let measured: Vec<&PodSample> = pods
        .iter()
        .filter(|p| p.ready && p.usage.is_some())
        .collect();
    if measured.is_empty() {
        return None;
    }
    let used: f64 = measured.iter().filter_map(|p| p.usage).sum();
    let requested: f64 = measured.iter().map(|p| p.request).sum();
    let current_utilization = utilization(used, requested);
    let ratio = f64::from(current_utilization) / f64::from(target);
    let missing: Vec<&PodSample> = pods.iter().filter(|p| p.usage.is_none()).collect();
    let unready: Vec<&PodSample> = pods
        .iter()
        .filter(|p| !p.ready && p.usage.is_some())
        .collect();
    let scale_up_with_unready = !unready.is_empty() && ratio > 1.0;
    if missing.is_empty() && !scale_up_with_unready {
        if (ratio - 1.0).abs() <= TOLERANCE {
            return Some((current, current_utilization));
        }
        let n = i32::try_from(measured.len()).unwrap_or(i32::MAX);
        return Some(((ratio * f64::from(n)).ceil() as i32, current_utilization));
    }
    // Fill in what is not known, against the direction the known pods point.
    let (mut all_used, mut all_requested, mut n) = (used, requested, measured.len());
    for p in &missing {
        if ratio < 1.0 {
            all_used += p.request * f64::from(target) / 100.0;
        }
        all_requested += p.request;
        n += 1;
    }
    if scale_up_with_unready {
        for p in &unready {
            all_requested += p.request;
            n += 1;
        }
    }
    let new_ratio = f64::from(utilization(all_used, all_requested)) / f64::from(target);
    if (new_ratio - 1.0).abs() <= TOLERANCE
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Some((current, current_utilization));
    }
    let desired = (new_ratio * n as f64).ceil() as i32;
    if (new_ratio < 1.0 && desired > current) || (new_ratio > 1.0 && desired < current) {
        return Some((current, current_utilization));
    }
    Some((desired, current_utilization))
}

/// Why the recommendation was bounded, for the ScalingLimited condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Not bounded.
    None,
    /// Raised to minReplicas.
    TooFew,
    /// Lowered to maxReplicas.
    TooMany,
    /// Lowered to how far one step may grow.
    ScaleUpLimit,
}

/// Bounds `desired` by min and max and by one step's growth from `current`.
pub fn bounded(current: i32, desired: i32, min: i32, max: i32) -> (i32, Limit) {
    // Kubernetes' growth limit when no scaling policy is given: double, or four.
    let step = current.saturating_mul(2).max(4);
    if desired > step && step < max {
        return (step, Limit::ScaleUpLimit);
    }
    if desired > max {
        return (max, Limit::TooMany);
    }
    if desired < min {
        return (min, Limit::TooFew);
    }
    (desired, Limit::None)
}

/// Recent recommendations, for stabilization.
#[derive(Debug, Default)]
pub struct History {
    recent: VecDeque<(Instant, i32)>,
}

impl History {
    /// Records `desired` at `now` and returns what to scale to from `current`: a scale up
    /// to the lowest recommendation of the `up` window, a scale down to the highest of
    /// the `down` window (never past `current` the other way).
    pub fn stabilize(
        &mut self,
        now: Instant,
        current: i32,
        desired: i32,
        up: Duration,
        down: Duration,
    ) -> i32 {
        self.recent.push_back((now, desired));
        let keep = up.max(down);
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > keep)
        {
            self.recent.pop_front();
        }
        let within = |w: Duration| {
            self.recent
                .iter()
                .filter(move |(t, _)| now.duration_since(*t) <= w)
                .map(|(_, d)| *d)
        };
        let up_to = within(up).min().unwrap_or(desired);
        let down_to = within(down).max().unwrap_or(desired);
        if desired > current {
            up_to.max(current)
        } else if desired < current {
            down_to.min(current)
        } else {
            current
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(usage: Option<f64>, ready: bool) -> PodSample {
        PodSample {
            usage,
            request: 0.1,
            ready,
        }
    }

    #[test]
    fn the_ratio_scales_the_measured_pods_outside_the_tolerance() {
        let at = |u: f64, n: usize| vec![pod(Some(u), true); n];
        assert_eq!(replicas(2, &at(0.1, 2), 50), Some((4, 100)));
        assert_eq!(replicas(4, &at(0.025, 4), 50), Some((2, 25)));
        assert_eq!(
            replicas(3, &at(0.0545, 3), 50),
            Some((3, 54)),
            "within 10 %"
        );
        assert_eq!(
            replicas(3, &at(0.1205, 3), 80),
            Some((5, 120)),
            "rounded up"
        );
        assert_eq!(
            replicas(3, &[pod(None, true)], 80),
            None,
            "nothing measured"
        );
    }

    #[test]
    fn missing_samples_never_shrink_a_busy_workload() {
        // Ten replicas, two measured at 150 % of target: the eight unknown count as using
        // nothing on a scale up, so it grows (not shrinks to three).
        let mut pods = vec![pod(Some(0.075), true); 2];
        pods.extend(vec![pod(None, true); 8]);
        let (desired, used) = replicas(10, &pods, 50).expect("measured");
        assert_eq!(used, 75);
        assert!(desired >= 10, "{desired}");
        // Quiet measured pods and unknown ones: the unknown count as at target, which
        // tempers the scale down.
        let mut pods = vec![pod(Some(0.01), true); 2];
        pods.extend(vec![pod(None, true); 2]);
        assert_eq!(replicas(4, &pods, 50), Some((3, 10)));
        // Pods not ready count as idle on a scale up.
        let pods = vec![pod(Some(0.2), true), pod(Some(0.5), false)];
        assert_eq!(replicas(2, &pods, 50), Some((4, 200)));
    }

    #[test]
    fn bounds_and_growth_per_step() {
        assert_eq!(bounded(1, 10, 1, 20), (4, Limit::ScaleUpLimit));
        assert_eq!(bounded(10, 40, 1, 20), (20, Limit::TooMany));
        assert_eq!(bounded(4, 0, 2, 20), (2, Limit::TooFew));
        assert_eq!(bounded(4, 6, 2, 20), (6, Limit::None));
    }

    #[tokio::test(start_paused = true)]
    async fn a_scale_down_waits_out_the_window_and_a_scale_up_does_not() {
        let mut h = History::default();
        let (up, down) = (Duration::ZERO, Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(h.stabilize(t0, 2, 6, up, down), 6, "up at once");
        // Load falls: the busy recommendation holds the replicas for the window.
        let t1 = t0 + Duration::from_secs(20);
        assert_eq!(h.stabilize(t1, 6, 2, up, down), 6);
        let t2 = t0 + Duration::from_secs(40);
        assert_eq!(h.stabilize(t2, 6, 3, up, down), 6);
        // Once the busy one is older than the window, the highest quiet one wins.
        let t3 = t0 + Duration::from_secs(70);
        assert_eq!(h.stabilize(t3, 6, 2, up, down), 3);
    }
}
