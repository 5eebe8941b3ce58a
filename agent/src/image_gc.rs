//! Image garbage collection, as the kubelet's image manager does it: every period it
//! notes which images exist and which are used by a container (running or not), and when
//! the image filesystem is fuller than the high threshold it removes unused images, least
//! recently used first, until the filesystem is back under the low threshold. It never
//! removes an image a container uses, a pinned image (the runtime's sandbox image), an
//! image younger than the minimum age (just pulled, its container not made yet), nor the
//! most recently used image of each repository: what a pod ran last can always start
//! again without the registry.
//!
//! The filesystem's size and free space come from statvfs of the directory the runtime
//! reports (CRI ImageFsInfo), so "full" counts everything on that filesystem, as the
//! kubelet counts it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::fs_usage::{self, FsStats};
use crate::image_ref;
use crate::runtime::{ImageInfo, Runtime, RuntimeError};

/// Collection starts when the image filesystem is this full (percent).
pub const DEFAULT_HIGH_THRESHOLD: u8 = 85;
/// Collection stops when it is this full.
pub const DEFAULT_LOW_THRESHOLD: u8 = 80;
/// Images younger than this are never removed (the kubelet's ImageMinimumGCAge).
pub const DEFAULT_MIN_AGE: Duration = Duration::from_secs(120);
/// How often images are looked at (the kubelet's ImageGCPeriod).
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(300);

/// When to collect and how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageGcPolicy {
    /// Start collecting at this usage (percent of the filesystem).
    pub high_threshold_percent: u8,
    /// Collect until usage is below this.
    pub low_threshold_percent: u8,
    /// Images first seen less than this ago stay.
    pub min_age: Duration,
    /// How often to look.
    pub period: Duration,
}

impl Default for ImageGcPolicy {
    fn default() -> Self {
        ImageGcPolicy {
            high_threshold_percent: DEFAULT_HIGH_THRESHOLD,
            low_threshold_percent: DEFAULT_LOW_THRESHOLD,
            min_age: DEFAULT_MIN_AGE,
            period: DEFAULT_PERIOD,
        }
    }
}

/// Thresholds that make no sense.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// High above 100.
    #[error("the high threshold {0}% is above 100%")]
    HighAbove100(u32),
    /// Low not below high.
    #[error("the low threshold {low}% must be below the high threshold {high}%")]
    LowNotBelowHigh {
        /// The low threshold.
        low: u32,
        /// The high threshold.
        high: u32,
    },
}

impl ImageGcPolicy {
    /// The default policy with these thresholds (percent), if low < high ≤ 100.
    pub fn with_thresholds(high: u32, low: u32) -> Result<Self, PolicyError> {
        if high > 100 {
            return Err(PolicyError::HighAbove100(high));
        }
        if low >= high {
            return Err(PolicyError::LowNotBelowHigh { low, high });
        }
        Ok(ImageGcPolicy {
            // Both fit: low < high ≤ 100.
            high_threshold_percent: high as u8,
            low_threshold_percent: low as u8,
            ..Default::default()
        })
    }
}

/// Bytes to free to bring `fs` under `low` percent, when it is at `high` percent or more
/// (the kubelet's arithmetic); None when below `high`, and always with `high` at 100,
/// which turns collection off as it does for the kubelet.
pub fn bytes_to_free(fs: FsStats, high: u8, low: u8) -> Option<u64> {
    if fs.capacity == 0 || high >= 100 {
        return None;
    }
    let available = fs.available.min(fs.capacity);
    let usage_percent = 100 - u128::from(available) * 100 / u128::from(fs.capacity);
    if usage_percent < u128::from(high) {
        return None;
    }
    let allowed_free = u128::from(fs.capacity) * u128::from(100 - low.min(100)) / 100;
    let needed = allowed_free.saturating_sub(u128::from(available));
    Some(u64::try_from(needed).unwrap_or(u64::MAX))
}

/// What is remembered about an image between looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageRecord {
    /// When it was first seen.
    pub first_seen: Instant,
    /// When a container was last seen using it; None if never.
    pub last_used: Option<Instant>,
}

/// The ids of the images that `used` (containers' image ids or names) refer to.
pub fn images_in_use(images: &[ImageInfo], used: &[String]) -> HashSet<String> {
    let mut by_name: HashMap<String, &str> = HashMap::new();
    for i in images {
        for name in i.repo_tags.iter().chain(&i.repo_digests) {
            if let Some(n) = image_ref::normalize(name) {
                by_name.insert(n, &i.id);
            }
        }
        by_name.insert(i.id.clone(), &i.id);
    }
    used.iter()
        .filter_map(|u| {
            by_name
                .get(u)
                .or_else(|| image_ref::normalize(u).and_then(|n| by_name.get(&n)))
        })
        .map(|id| (*id).to_string())
        .collect()
}

fn repositories(i: &ImageInfo) -> HashSet<String> {
    i.repo_tags
        .iter()
        .chain(&i.repo_digests)
        .filter_map(|n| image_ref::parse(n))
        .map(|r| r.repository())
        .collect()
}

/// The images to remove to free `to_free` bytes, in removal order: unused, unpinned,
/// at least `min_age` old, not the most recently used of any of their repositories,
/// least recently used first (never used before used; then first seen first). Images
/// without a record count as first seen `now`.
pub fn select(
    images: &[ImageInfo],
    in_use: &HashSet<String>,
    records: &HashMap<String, ImageRecord>,
    now: Instant,
    min_age: Duration,
    to_free: u64,
) -> Vec<ImageInfo> {
    let record = |i: &ImageInfo| {
        records.get(&i.id).copied().unwrap_or(ImageRecord {
            first_seen: now,
            last_used: None,
        })
    };
    let recency = |i: &ImageInfo| {
        let r = record(i);
        (r.last_used, r.first_seen)
    };
    // The newest image of each repository stays.
    let mut newest: HashMap<String, &ImageInfo> = HashMap::new();
    for i in images {
        for repo in repositories(i) {
            match newest.get(&repo) {
                Some(kept) if recency(kept) >= recency(i) => {}
                _ => {
                    newest.insert(repo, i);
                }
            }
        }
    }
    let kept: HashSet<&str> = newest.values().map(|i| i.id.as_str()).collect();
    let mut candidates: Vec<&ImageInfo> = images
        .iter()
        .filter(|i| !in_use.contains(&i.id) && !i.pinned && !kept.contains(i.id.as_str()))
        .filter(|i| now.saturating_duration_since(record(i).first_seen) >= min_age)
        .collect();
    candidates.sort_by_key(|i| recency(i));
    let mut freed = 0u64;
    let mut out = Vec::new();
    for i in candidates {
        if freed >= to_free {
            break;
        }
        freed = freed.saturating_add(i.size);
        out.push(i.clone());
    }
    out
}

/// The collector's memory: a record per image id.
#[derive(Debug, Default)]
pub struct ImageGc {
    records: HashMap<String, ImageRecord>,
}

/// What one look did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    /// Image ids removed.
    pub removed: Vec<String>,
    /// Bytes they took.
    pub freed: u64,
    /// Bytes that were to be freed (0 when under the high threshold).
    pub wanted: u64,
}

impl ImageGc {
    /// Notes the images present and those in use at `now`; returns both.
    async fn detect<R: Runtime>(
        &mut self,
        runtime: &R,
        now: Instant,
    ) -> Result<(Vec<ImageInfo>, HashSet<String>), RuntimeError> {
        let images = runtime.list_images().await?;
        let used = runtime.container_images().await?;
        let in_use = images_in_use(&images, &used);
        let present: HashSet<&str> = images.iter().map(|i| i.id.as_str()).collect();
        self.records.retain(|id, _| present.contains(id.as_str()));
        for i in &images {
            let r = self.records.entry(i.id.clone()).or_insert(ImageRecord {
                first_seen: now,
                last_used: None,
            });
            if in_use.contains(&i.id) {
                r.last_used = Some(now);
            }
        }
        Ok((images, in_use))
    }

    /// One look: note the images, and remove some if `fs` is above the high threshold.
    pub async fn collect<R: Runtime>(
        &mut self,
        runtime: &R,
        policy: &ImageGcPolicy,
        fs: FsStats,
        now: Instant,
    ) -> Result<Collected, RuntimeError> {
        let (images, in_use) = self.detect(runtime, now).await?;
        let Some(wanted) = bytes_to_free(
            fs,
            policy.high_threshold_percent,
            policy.low_threshold_percent,
        ) else {
            return Ok(Collected::default());
        };
        let chosen = select(&images, &in_use, &self.records, now, policy.min_age, wanted);
        let mut done = Collected {
            wanted,
            ..Default::default()
        };
        for i in chosen {
            match runtime.remove_image(&i.id).await {
                Ok(()) => {
                    tracing::info!(image = %i.id, tags = ?i.repo_tags, size = i.size, "removed an unused image");
                    self.records.remove(&i.id);
                    done.freed = done.freed.saturating_add(i.size);
                    done.removed.push(i.id);
                }
                // Another may have started using it since: the next look decides again.
                Err(e) => {
                    tracing::warn!(image = %i.id, error = %e, "could not remove an image")
                }
            }
        }
        if done.freed < wanted {
            tracing::warn!(
                wanted,
                freed = done.freed,
                "image garbage collection could not free enough space"
            );
        }
        Ok(done)
    }
}

/// Collects `runtime`'s images every `policy.period` until `shutdown` flips; does nothing
/// for a runtime without images.
pub async fn run<R: Runtime>(
    runtime: Arc<R>,
    policy: ImageGcPolicy,
    mut shutdown: watch::Receiver<bool>,
) {
    if !runtime.manages_images() {
        return;
    }
    let mut gc = ImageGc::default();
    loop {
        if let Err(e) = once(&mut gc, runtime.as_ref(), &policy).await {
            tracing::warn!(error = %e, "image garbage collection");
        }
        tokio::select! {
            _ = tokio::time::sleep(policy.period) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

async fn once<R: Runtime>(
    gc: &mut ImageGc,
    runtime: &R,
    policy: &ImageGcPolicy,
) -> Result<(), RuntimeError> {
    let Some(usage) = runtime.image_fs_usage().await? else {
        return Ok(());
    };
    let fs = fs_usage::of(&usage.mountpoint).map_err(|e| RuntimeError::Io(e.to_string()))?;
    tracing::debug!(mountpoint = %usage.mountpoint.display(), images_bytes = usage.used_bytes, capacity = fs.capacity, available = fs.available, "image filesystem");
    let done = gc.collect(runtime, policy, fs, Instant::now()).await?;
    if !done.removed.is_empty() {
        tracing::info!(
            removed = done.removed.len(),
            freed = done.freed,
            wanted = done.wanted,
            "image garbage collection"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::FakeRuntime;
    use crate::runtime::{ContainerConfig, SandboxConfig};

    fn image(id: &str, tags: &[&str], size: u64) -> ImageInfo {
        ImageInfo {
            id: id.into(),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            repo_digests: Vec::new(),
            size,
            pinned: false,
        }
    }

    fn ids(images: &[ImageInfo]) -> Vec<&str> {
        images.iter().map(|i| i.id.as_str()).collect()
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn thresholds_are_validated() {
        assert!(ImageGcPolicy::with_thresholds(85, 80).is_ok());
        assert!(ImageGcPolicy::with_thresholds(100, 0).is_ok());
        assert_eq!(
            ImageGcPolicy::with_thresholds(101, 80),
            Err(PolicyError::HighAbove100(101))
        );
        assert_eq!(
            ImageGcPolicy::with_thresholds(80, 80),
            Err(PolicyError::LowNotBelowHigh { low: 80, high: 80 })
        );
    }

    #[test]
    fn bytes_to_free_as_the_kubelet_computes() {
        let fs = |available| FsStats {
            capacity: 1000,
            available,
        };
        assert_eq!(bytes_to_free(fs(200), 85, 80), None, "80% used");
        assert_eq!(bytes_to_free(fs(150), 85, 80), Some(50), "85% used: to 80%");
        assert_eq!(bytes_to_free(fs(0), 85, 80), Some(200));
        assert_eq!(
            bytes_to_free(fs(0), 100, 0),
            None,
            "100 turns collection off"
        );
        assert_eq!(
            bytes_to_free(
                FsStats {
                    capacity: 0,
                    available: 0
                },
                85,
                80
            ),
            None
        );
    }

    #[test]
    fn least_recently_used_first_keeping_each_repositorys_newest() {
        let now = Instant::now() + Duration::from_secs(3600);
        let at = |s: u64| now - Duration::from_secs(s);
        let images = [
            image("old-app", &["r.io/app:1"], 10),
            image("mid-app", &["r.io/app:2"], 20),
            image("new-app", &["r.io/app:3"], 30),
            image("never", &["r.io/tool:1", "r.io/tool:latest"], 40),
            image("never-2", &["r.io/tool:0"], 50),
            image("pause", &["r.io/pause:3"], 5),
            image("running", &["r.io/web:1"], 60),
            image("young", &["r.io/young:1"], 70),
            image("young-2", &["r.io/young:2"], 70),
            image("dangling", &[], 80),
        ];
        let mut images = images.to_vec();
        images[5].pinned = true;
        let records: HashMap<String, ImageRecord> = [
            ("old-app", at(3000), Some(at(2000))),
            ("mid-app", at(3000), Some(at(1000))),
            ("new-app", at(3000), Some(at(10))),
            ("never", at(2500), None),
            ("never-2", at(2400), None),
            ("pause", at(3000), None),
            ("running", at(3000), Some(now)),
            ("young", at(10), None),
            ("young-2", at(5), None),
            ("dangling", at(3000), None),
        ]
        .into_iter()
        .map(|(id, first_seen, last_used)| {
            (
                id.to_string(),
                ImageRecord {
                    first_seen,
                    last_used,
                },
            )
        })
        .collect();
        let in_use: HashSet<String> = ["running".to_string()].into();

        let all = select(&images, &in_use, &records, now, MIN, u64::MAX);
        assert_eq!(
            ids(&all),
            ["dangling", "never", "old-app", "mid-app"],
            "never used first (first seen first), then least recently used; \
             new-app and never-2 are their repositories' newest; pinned, in use and young stay"
        );
        let some = select(&images, &in_use, &records, now, MIN, 100);
        assert_eq!(
            ids(&some),
            ["dangling", "never"],
            "stops once enough is freed"
        );
        assert!(select(&images, &in_use, &records, now, MIN, 0).is_empty());
    }

    #[test]
    fn containers_use_images_by_id_or_by_name() {
        let images = [
            image("sha256:a", &["docker.io/library/busybox:latest"], 1),
            image("sha256:b", &["r.io/app:1"], 1),
            image("sha256:c", &["r.io/other:1"], 1),
        ];
        let used = images_in_use(
            &images,
            &[
                "busybox".to_string(),
                "sha256:b".to_string(),
                "r.io/gone:1".to_string(),
            ],
        );
        assert_eq!(
            used,
            ["sha256:a".to_string(), "sha256:b".to_string()].into()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn collects_only_above_the_high_threshold() {
        let rt = FakeRuntime::new("10.0.0.1").with_images();
        let used = rt.add_image("r.io/app:2", 100);
        let old = rt.add_image("r.io/app:1", 300);
        let sb = rt
            .run_pod_sandbox(&SandboxConfig::default())
            .await
            .expect("sandbox");
        let c = rt
            .create_container(
                &sb,
                &ContainerConfig {
                    image: "r.io/app:2".into(),
                    ..Default::default()
                },
            )
            .await
            .expect("container");
        rt.start_container(&c).await.expect("start");

        let policy = ImageGcPolicy::default();
        let mut gc = ImageGc::default();
        let full = FsStats {
            capacity: 1000,
            available: 100,
        };
        let done = gc
            .collect(&rt, &policy, full, Instant::now())
            .await
            .expect("collect");
        assert!(done.removed.is_empty(), "too young yet: {done:?}");

        tokio::time::advance(policy.min_age).await;
        let roomy = FsStats {
            capacity: 1000,
            available: 500,
        };
        let done = gc
            .collect(&rt, &policy, roomy, Instant::now())
            .await
            .expect("collect");
        assert_eq!(done, Collected::default(), "under the high threshold");

        let done = gc
            .collect(&rt, &policy, full, Instant::now())
            .await
            .expect("collect");
        assert_eq!(done.removed, [old]);
        assert_eq!(done.freed, 300);
        assert_eq!(done.wanted, 100);
        let left: Vec<String> = rt
            .list_images()
            .await
            .expect("list")
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(left, [used]);
    }
}
