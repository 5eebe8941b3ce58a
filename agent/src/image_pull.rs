//! Making sure a container's image is there before it is created, as the kubelet's image
//! manager does: the container's imagePullPolicy (Always, IfNotPresent, Never) decides
//! whether to pull; pulls carry the credentials of the pod's imagePullSecrets that match
//! the image's registry; a failed pull leaves the container waiting with ErrImagePull
//! (the registry's words in the message), and later tries wait out a back-off per pod and
//! image ([`crate::backoff`]: 10 s doubling to 5 minutes), during which it waits with
//! ImagePullBackOff and the runtime is not asked about the image at all. Events Pulling,
//! Pulled, Failed and BackOff say what happened.

use std::collections::HashMap;
use std::time::Duration;

use flotilla_client::Client;
use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use tokio::time::Instant;

use crate::backoff::{self, Backoff};
use crate::pull_secrets;
use crate::runtime::{RegistryAuth, Runtime, RuntimeError};

/// Why a container cannot be created yet, as its status's `waiting.reason` says.
pub const ERR_IMAGE_PULL: &str = "ErrImagePull";
/// See [`ERR_IMAGE_PULL`].
pub const IMAGE_PULL_BACKOFF: &str = "ImagePullBackOff";
/// See [`ERR_IMAGE_PULL`].
pub const ERR_IMAGE_NEVER_PULL: &str = "ErrImageNeverPull";
/// See [`ERR_IMAGE_PULL`].
pub const INVALID_IMAGE_NAME: &str = "InvalidImageName";
/// See [`ERR_IMAGE_PULL`].
pub const IMAGE_INSPECT_ERROR: &str = "ImageInspectError";

/// Whether to pull, from the policy and whether the image is present (an unknown policy
/// counts as IfNotPresent, as the kubelet treats it).
pub fn should_pull(policy: &str, present: bool) -> bool {
    match policy {
        "Always" => true,
        "Never" => false,
        _ => !present,
    }
}

/// A container that must wait for its image: (reason, message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// ErrImagePull, ImagePullBackOff, ErrImageNeverPull, InvalidImageName or
    /// ImageInspectError.
    pub reason: String,
    /// For people.
    pub message: String,
}

/// An image whose last pull failed.
#[derive(Debug, Clone)]
struct FailedPull {
    backoff: Backoff,
    last_error: String,
    /// A BackOff Event was recorded for this wait already.
    reported: bool,
}

/// One pod's failed pulls, per image, as the kubelet keys its pull back-off by pod and
/// image. The pod's worker keeps it with the rest of the pod's state, so it goes when the
/// pod does.
#[derive(Debug, Default)]
pub struct PullBackoff {
    failed: HashMap<String, FailedPull>,
}

/// What the back-off says about pulling now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Go ahead.
    Pull,
    /// Wait: the last pull failed with `last_error` less than `delay` ago; `first` is true
    /// the first time this wait is seen (for its one Event).
    Wait {
        /// The current back-off.
        delay: Duration,
        /// The last pull's error.
        last_error: String,
        /// First time asked during this wait.
        first: bool,
    },
}

impl PullBackoff {
    /// May `image` be pulled at `now`?
    pub fn gate(&mut self, image: &str, now: Instant) -> Gate {
        match self.failed.get_mut(image) {
            Some(f) if f.backoff.waiting(now) => {
                let first = !f.reported;
                f.reported = true;
                Gate::Wait {
                    delay: f.backoff.delay(),
                    last_error: f.last_error.clone(),
                    first,
                }
            }
            _ => Gate::Pull,
        }
    }

    /// Records a failed pull of `image` at `now`; returns the wait before the next.
    pub fn failed(&mut self, image: &str, now: Instant, error: &str) -> Duration {
        let backoff = match self.failed.get(image) {
            // A failure long after the one before starts afresh, as the kubelet's back-off
            // forgets what has been idle for twice its longest wait.
            Some(f) if now.saturating_duration_since(f.backoff.since()) <= backoff::MAX * 2 => {
                f.backoff.next(now)
            }
            _ => Backoff::new(now),
        };
        self.failed.insert(
            image.to_string(),
            FailedPull {
                backoff,
                last_error: error.to_string(),
                reported: false,
            },
        );
        backoff.delay()
    }

    /// Forgets `image`'s failures after a pull that worked.
    pub fn succeeded(&mut self, image: &str) {
        self.failed.remove(image);
    }
}

/// Records Events about the pod the image is for.
pub trait EventSink {
    /// Records one Event (Normal or Warning).
    fn event(
        &self,
        type_: &str,
        reason: &str,
        message: &str,
    ) -> impl std::future::Future<Output = ()> + Send;
}

/// The credentials of the pod's pull secrets; a Secret that is missing or unreadable is
/// skipped (with a Warning), as the kubelet goes on without it.
pub async fn pull_credentials<E: EventSink>(
    client: &Client,
    pod: &Pod,
    events: &E,
) -> Vec<pull_secrets::Credential> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let names = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_ref())
        .into_iter()
        .flatten()
        .map(|r| r.name.clone())
        .filter(|n| !n.is_empty());
    let mut creds = Vec::new();
    let mut failed = Vec::new();
    for name in names {
        match client.api::<Secret>(&ns).get_opt(&name).await {
            Ok(Some(s)) => match pull_secrets::parse(&s) {
                Ok(c) => creds.extend(c),
                Err(e) => {
                    tracing::warn!(namespace = %ns, secret = %name, error = %e, "unusable pull secret");
                    failed.push(format!("{ns}/{name}: {e}"));
                }
            },
            Ok(None) => failed.push(format!("{ns}/{name}: not found")),
            Err(e) => failed.push(format!("{ns}/{name}: {e}")),
        }
    }
    if !failed.is_empty() {
        events
            .event(
                "Warning",
                "FailedToRetrieveImagePullSecret",
                &format!(
                    "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                    failed.join(", ")
                ),
            )
            .await;
    }
    creds
}

/// Pulls with each credential in turn (none: anonymously) until one works; the last error
/// otherwise.
async fn pull_with<R: Runtime>(
    runtime: &R,
    image: &str,
    auths: &[RegistryAuth],
) -> Result<String, RuntimeError> {
    if auths.is_empty() {
        return runtime.pull_image(image, None).await;
    }
    let mut last = None;
    for auth in auths {
        match runtime.pull_image(image, Some(auth)).await {
            Ok(r) => return Ok(r),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| RuntimeError::Pull(format!("pulling {image}"))))
}

/// Makes sure `c`'s image is present, pulling it when its policy says; Err says why the
/// container must wait. `backoff` holds the pod's failed pulls; while `c`'s image is
/// backing off, neither its status nor a pull is asked of the runtime. `credentials` is
/// asked for only when a pull happens.
pub async fn ensure_image<R, E, F, Fut>(
    runtime: &R,
    backoff: &mut PullBackoff,
    events: &E,
    c: &Container,
    credentials: F,
) -> Result<(), Waiting>
where
    R: Runtime,
    E: EventSink,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Vec<pull_secrets::Credential>>,
{
    let image = c.image.clone().unwrap_or_default();
    let policy = c.image_pull_policy.as_deref().unwrap_or("IfNotPresent");
    if crate::image_ref::parse(&image).is_none() {
        let message =
            format!("Failed to apply default image tag {image:?}: invalid reference format");
        events.event("Warning", "InspectFailed", &message).await;
        return Err(Waiting {
            reason: INVALID_IMAGE_NAME.into(),
            message,
        });
    }
    // Only a policy that pulls an absent image can be backing off. While it is, the
    // runtime is not asked even whether the image is there: the worker looks every
    // second, and an image that turns up meanwhile (pulled for another pod) is found when
    // the back-off ends.
    if should_pull(policy, false)
        && let Gate::Wait {
            last_error, first, ..
        } = backoff.gate(&image, Instant::now())
    {
        let message = format!("Back-off pulling image {image:?}");
        if first {
            events.event("Normal", "BackOff", &message).await;
        }
        return Err(Waiting {
            reason: IMAGE_PULL_BACKOFF.into(),
            message: format!("{message}: {ERR_IMAGE_PULL}: {last_error}"),
        });
    }
    let present = match runtime.image_status(&image).await {
        Ok(found) => found.is_some(),
        Err(e) => {
            return Err(Waiting {
                reason: IMAGE_INSPECT_ERROR.into(),
                message: format!("Failed to inspect image {image:?}: {e}"),
            });
        }
    };
    if !should_pull(policy, present) {
        if present {
            return Ok(());
        }
        let message = format!("Container image {image:?} is not present with pull policy of Never");
        events
            .event("Warning", ERR_IMAGE_NEVER_PULL, &message)
            .await;
        return Err(Waiting {
            reason: ERR_IMAGE_NEVER_PULL.into(),
            message,
        });
    }
    let creds = credentials().await;
    let auths = pull_secrets::for_image(&creds, &image);
    events
        .event("Normal", "Pulling", &format!("Pulling image {image:?}"))
        .await;
    let began = Instant::now();
    tracing::info!(image = %image, policy, credentials = auths.len(), "pulling");
    match pull_with(runtime, &image, &auths).await {
        Ok(reference) => {
            backoff.succeeded(&image);
            let took = began.elapsed();
            tracing::info!(image = %image, reference = %reference, took_ms = took.as_millis() as u64, "pulled");
            events
                .event(
                    "Normal",
                    "Pulled",
                    &format!(
                        "Successfully pulled image {image:?} in {:.3}s",
                        took.as_secs_f64()
                    ),
                )
                .await;
            Ok(())
        }
        Err(e) => {
            let error = e.to_string();
            let wait = backoff.failed(&image, Instant::now(), &error);
            tracing::warn!(image = %image, error = %error, retry_in_s = wait.as_secs(), "pull failed");
            events
                .event(
                    "Warning",
                    "Failed",
                    &format!("Failed to pull image {image:?}: {error}"),
                )
                .await;
            Err(Waiting {
                reason: ERR_IMAGE_PULL.into(),
                message: format!("Failed to pull image {image:?}: {error}"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::runtime::fake::FakeRuntime;

    #[derive(Default)]
    struct Recorded(Mutex<Vec<(String, String)>>);

    impl EventSink for Recorded {
        async fn event(&self, _type: &str, reason: &str, message: &str) {
            self.0
                .lock()
                .expect("lock")
                .push((reason.to_string(), message.to_string()));
        }
    }

    impl Recorded {
        fn reasons(&self) -> Vec<String> {
            self.0
                .lock()
                .expect("lock")
                .iter()
                .map(|(r, _)| r.clone())
                .collect()
        }
    }

    fn container(image: &str, policy: &str) -> Container {
        Container {
            name: "c".into(),
            image: Some(image.into()),
            image_pull_policy: Some(policy.into()),
            ..Default::default()
        }
    }

    async fn none() -> Vec<pull_secrets::Credential> {
        Vec::new()
    }

    #[test]
    fn policies_decide_as_kubernetes() {
        assert!(should_pull("Always", true));
        assert!(should_pull("Always", false));
        assert!(should_pull("IfNotPresent", false));
        assert!(!should_pull("IfNotPresent", true));
        assert!(!should_pull("Never", false));
        assert!(!should_pull("Never", true));
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_to_its_cap_and_forgets_success() {
        let mut b = PullBackoff::default();
        let t0 = Instant::now();
        assert_eq!(b.gate("k", t0), Gate::Pull);
        assert_eq!(b.failed("k", t0, "boom"), Duration::from_secs(10));
        assert_eq!(
            b.gate("k", t0 + Duration::from_secs(1)),
            Gate::Wait {
                delay: Duration::from_secs(10),
                last_error: "boom".into(),
                first: true
            }
        );
        assert!(matches!(
            b.gate("k", t0 + Duration::from_secs(2)),
            Gate::Wait { first: false, .. }
        ));
        assert_eq!(b.gate("other", t0), Gate::Pull, "per key");
        assert_eq!(b.gate("k", t0 + Duration::from_secs(10)), Gate::Pull);
        let mut delays = Vec::new();
        for i in 1..8 {
            delays.push(b.failed("k", t0 + Duration::from_secs(i), "boom").as_secs());
        }
        assert_eq!(delays, [20, 40, 80, 160, 300, 300, 300]);
        b.succeeded("k");
        assert_eq!(b.gate("k", t0 + Duration::from_secs(8)), Gate::Pull);
        assert_eq!(b.failed("k", t0, "again"), Duration::from_secs(10));
    }

    #[tokio::test]
    async fn if_not_present_pulls_once_and_never_never_pulls() {
        let rt = FakeRuntime::new("10.0.0.1").with_images();
        rt.serve_image("r.io/app:1", 100, None);
        let events = Recorded::default();
        let mut b = PullBackoff::default();
        let c = container("r.io/app:1", "IfNotPresent");
        ensure_image(&rt, &mut b, &events, &c, none)
            .await
            .expect("pulled");
        ensure_image(&rt, &mut b, &events, &c, none)
            .await
            .expect("present");
        assert_eq!(rt.pulls().len(), 1);
        assert_eq!(events.reasons(), ["Pulling", "Pulled"]);
        let msg = events.0.lock().expect("lock")[1].1.clone();
        assert!(
            msg.starts_with("Successfully pulled image \"r.io/app:1\" in "),
            "{msg}"
        );

        let always = container("r.io/app:1", "Always");
        ensure_image(&rt, &mut b, &events, &always, none)
            .await
            .expect("pulled again");
        assert_eq!(rt.pulls().len(), 2);

        let never = container("r.io/absent:1", "Never");
        let w = ensure_image(&rt, &mut b, &events, &never, none)
            .await
            .expect_err("absent");
        assert_eq!(w.reason, ERR_IMAGE_NEVER_PULL);
        assert_eq!(
            w.message,
            "Container image \"r.io/absent:1\" is not present with pull policy of Never"
        );
        assert_eq!(rt.pulls().len(), 2, "Never does not pull");

        let bad = container("r.io/app:", "IfNotPresent");
        let w = ensure_image(&rt, &mut b, &events, &bad, none)
            .await
            .expect_err("invalid");
        assert_eq!(w.reason, INVALID_IMAGE_NAME);
        assert_eq!(rt.pulls().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_pull_waits_out_its_backoff() {
        let rt = FakeRuntime::new("10.0.0.1").with_images();
        let events = Recorded::default();
        let mut b = PullBackoff::default();
        let c = container("r.io/missing:1", "IfNotPresent");
        let w = ensure_image(&rt, &mut b, &events, &c, none)
            .await
            .expect_err("not found");
        assert_eq!(w.reason, ERR_IMAGE_PULL);
        assert_eq!(
            w.message,
            "Failed to pull image \"r.io/missing:1\": r.io/missing:1: not found"
        );
        for _ in 0..3 {
            let w = ensure_image(&rt, &mut b, &events, &c, none)
                .await
                .expect_err("backing off");
            assert_eq!(w.reason, IMAGE_PULL_BACKOFF);
            assert_eq!(
                w.message,
                "Back-off pulling image \"r.io/missing:1\": ErrImagePull: r.io/missing:1: not found"
            );
        }
        assert_eq!(rt.pulls().len(), 1, "no pull during the back-off");
        assert_eq!(events.reasons(), ["Pulling", "Failed", "BackOff"]);
        tokio::time::advance(backoff::INITIAL).await;
        let w = ensure_image(&rt, &mut b, &events, &c, none)
            .await
            .expect_err("still missing");
        assert_eq!(w.reason, ERR_IMAGE_PULL);
        assert_eq!(rt.pulls().len(), 2);
        // The second wait is twice the first.
        tokio::time::advance(backoff::INITIAL).await;
        let w = ensure_image(&rt, &mut b, &events, &c, none)
            .await
            .expect_err("backing off");
        assert_eq!(w.reason, IMAGE_PULL_BACKOFF);
        tokio::time::advance(backoff::INITIAL).await;
        rt.serve_image("r.io/missing:1", 100, None);
        ensure_image(&rt, &mut b, &events, &c, none)
            .await
            .expect("pulled at last");
        assert_eq!(rt.pulls().len(), 3);
        // Another pod (another worker's back-off) is not held back by this one's.
        let other = FakeRuntime::new("10.0.0.1").with_images();
        let c2 = container("r.io/gone:1", "IfNotPresent");
        ensure_image(&other, &mut b, &events, &c2, none)
            .await
            .expect_err("missing");
        let w = ensure_image(&other, &mut PullBackoff::default(), &events, &c2, none)
            .await
            .expect_err("missing");
        assert_eq!(w.reason, ERR_IMAGE_PULL, "a pull, not a back-off");
        assert_eq!(other.pulls().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn while_backing_off_the_runtime_is_not_asked_about_the_image() {
        let rt = FakeRuntime::new("10.0.0.1").with_images();
        let events = Recorded::default();
        let mut b = PullBackoff::default();
        let c = container("r.io/missing:1", "Always");
        ensure_image(&rt, &mut b, &events, &c, none)
            .await
            .expect_err("not found");
        assert_eq!((rt.image_status_calls(), rt.pulls().len()), (1, 1));
        // The worker looks every second.
        for _ in 0..9 {
            tokio::time::advance(Duration::from_secs(1)).await;
            let w = ensure_image(&rt, &mut b, &events, &c, none)
                .await
                .expect_err("backing off");
            assert_eq!(w.reason, IMAGE_PULL_BACKOFF);
        }
        assert_eq!(
            (rt.image_status_calls(), rt.pulls().len()),
            (1, 1),
            "neither status nor pull during the back-off"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        ensure_image(&rt, &mut b, &events, &c, none)
            .await
            .expect_err("still not found");
        assert_eq!((rt.image_status_calls(), rt.pulls().len()), (2, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_never_container_is_not_held_back_by_a_pull_of_its_image() {
        let rt = FakeRuntime::new("10.0.0.1").with_images();
        let events = Recorded::default();
        let mut b = PullBackoff::default();
        let pulls = container("r.io/missing:1", "IfNotPresent");
        ensure_image(&rt, &mut b, &events, &pulls, none)
            .await
            .expect_err("not found");
        let never = container("r.io/missing:1", "Never");
        let w = ensure_image(&rt, &mut b, &events, &never, none)
            .await
            .expect_err("absent");
        assert_eq!(w.reason, ERR_IMAGE_NEVER_PULL);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_long_after_the_last_starts_the_backoff_afresh() {
        let mut b = PullBackoff::default();
        let t0 = Instant::now();
        assert_eq!(b.failed("i", t0, "boom"), Duration::from_secs(10));
        assert_eq!(b.failed("i", t0, "boom"), Duration::from_secs(20));
        let idle = t0 + backoff::MAX * 2;
        assert_eq!(b.failed("i", idle, "boom"), Duration::from_secs(40));
        let later = idle + backoff::MAX * 2 + Duration::from_secs(1);
        assert_eq!(b.failed("i", later, "boom"), Duration::from_secs(10));
    }

    #[tokio::test]
    async fn matching_credentials_are_tried_in_turn() {
        let rt = FakeRuntime::new("10.0.0.1").with_images();
        rt.serve_image("r.io/team/app:1", 100, Some(("right", "pw")));
        let events = Recorded::default();
        let mut b = PullBackoff::default();
        let c = container("r.io/team/app:1", "IfNotPresent");
        let w = ensure_image(&rt, &mut b, &events, &c, none)
            .await
            .expect_err("no credentials");
        assert!(w.message.contains("401 Unauthorized"), "{}", w.message);

        let creds = || async {
            vec![
                pull_secrets::Credential {
                    key: "r.io".into(),
                    username: "right".into(),
                    password: "pw".into(),
                },
                pull_secrets::Credential {
                    key: "r.io/team".into(),
                    username: "wrong".into(),
                    password: "pw".into(),
                },
                pull_secrets::Credential {
                    key: "other.io".into(),
                    username: "elsewhere".into(),
                    password: "pw".into(),
                },
            ]
        };
        // Another pod, with pull secrets: the first pod's back-off is its own.
        ensure_image(&rt, &mut PullBackoff::default(), &events, &c, creds)
            .await
            .expect("pulled with the second");
        let users: Vec<Option<String>> = rt
            .pulls()
            .into_iter()
            .map(|(_, a)| a.map(|a| a.username))
            .collect();
        assert_eq!(
            users,
            [None, Some("wrong".into()), Some("right".into())],
            "the more specific key first; the other registry's never"
        );
    }
}
