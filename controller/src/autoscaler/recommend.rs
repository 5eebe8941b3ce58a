//! The replica count an autoscaler recommends, as Kubernetes' HPA computes it: the ratio
//! of the measured utilization to the target, applied to the pods measured, within a 10 %
//! tolerance; bounded by min and max replicas and by how fast it may grow (double, or four
//! more, per step); and stabilized — a scale down goes only as low as the highest
//! recommendation of the last window (five minutes by default), so one quiet sample never
//! shrinks what the next busy one must grow again.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Ratios this close to 1 leave the replicas as they are.
pub const TOLERANCE: f64 = 0.1;
/// The default scale-down stabilization window.
pub const DEFAULT_SCALE_DOWN_WINDOW: Duration = Duration::from_secs(300);

/// Replicas for `measured` pods at `utilization` percent of their requests, aiming at
/// `target` percent, currently `current` replicas.
pub fn from_utilization(current: i32, measured: i32, utilization: f64, target: i32) -> i32 {
    let ratio = utilization / f64::from(target.max(1));
    if (ratio - 1.0).abs() <= TOLERANCE || measured == 0 {
        return current;
    }
    (ratio * f64::from(measured)).ceil() as i32
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
    let step = (current.saturating_mul(2)).max(current.saturating_add(4));
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

    #[test]
    fn the_ratio_scales_the_measured_pods_outside_the_tolerance() {
        assert_eq!(from_utilization(2, 2, 100.0, 50), 4);
        assert_eq!(from_utilization(4, 4, 25.0, 50), 2);
        assert_eq!(from_utilization(3, 3, 54.0, 50), 3, "within 10 %");
        assert_eq!(from_utilization(3, 3, 120.0, 80), 5, "rounded up");
    }

    #[test]
    fn bounds_and_growth_per_step() {
        assert_eq!(bounded(1, 10, 1, 20), (5, Limit::ScaleUpLimit));
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
