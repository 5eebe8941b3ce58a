//! Image references as Docker, containerd and Kubernetes read them: `busybox` means
//! `docker.io/library/busybox:latest`; the first path component is a registry host only
//! when it looks like one (has a `.` or a `:`, or is `localhost`).

/// The registry of names without a host.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// One image reference, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]` (`docker.io` when the name has none).
    pub registry: String,
    /// The repository's path in the registry (`library/busybox`, `private/app`).
    pub path: String,
    /// The tag, if named (`latest` is implied only when neither tag nor digest is).
    pub tag: Option<String>,
    /// The digest (`sha256:…`), if named.
    pub digest: Option<String>,
}

impl Reference {
    /// `registry/path`: what tags and digests of one repository share.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.registry, self.path)
    }
}

impl std::fmt::Display for Reference {
    /// The fully qualified name: `registry/path[:tag][@digest]`, `:latest` when neither.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.repository())?;
        match (&self.tag, &self.digest) {
            (None, None) => write!(f, ":latest"),
            (tag, digest) => {
                if let Some(t) = tag {
                    write!(f, ":{t}")?;
                }
                if let Some(d) = digest {
                    write!(f, "@{d}")?;
                }
                Ok(())
            }
        }
    }
}

fn looks_like_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

/// Splits `image` into its parts; None when it is not a reference at all (empty, or an
/// empty path component).
pub fn parse(image: &str) -> Option<Reference> {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d.to_string())),
        None => (image, None),
    };
    // A tag follows the last ':' only when no '/' comes after it (else it is a port).
    let (name, tag) = match name.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t.to_string())),
        _ => (name, None),
    };
    let (registry, path) = match name.split_once('/') {
        Some((first, rest)) if looks_like_host(first) => (first.to_string(), rest.to_string()),
        _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
    };
    let path = if registry == DEFAULT_REGISTRY && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    if path.split('/').any(str::is_empty) || tag.as_deref() == Some("") {
        return None;
    }
    Some(Reference {
        registry,
        path,
        tag,
        digest,
    })
}

/// The fully qualified form of `image` (`busybox` → `docker.io/library/busybox:latest`).
pub fn normalize(image: &str) -> Option<String> {
    parse(image).map(|r| r.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_docker_hub_library_images() {
        let r = parse("busybox").expect("parses");
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.path, "library/busybox");
        assert_eq!(r.tag, None);
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(
            normalize("user/app:2").as_deref(),
            Some("docker.io/user/app:2")
        );
    }

    #[test]
    fn hosts_ports_tags_and_digests() {
        let r = parse("127.0.0.1:5000/private/busybox:1").expect("parses");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.path, "private/busybox");
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.repository(), "127.0.0.1:5000/private/busybox");

        let r = parse("localhost:5000/app").expect("parses");
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.tag, None);

        let r = parse("flotilla.local/busybox@sha256:abcd").expect("parses");
        assert_eq!(r.registry, "flotilla.local");
        assert_eq!(r.digest.as_deref(), Some("sha256:abcd"));
        assert_eq!(r.to_string(), "flotilla.local/busybox@sha256:abcd");

        assert_eq!(
            normalize("localhost/app:v1@sha256:ab").as_deref(),
            Some("localhost/app:v1@sha256:ab")
        );
    }

    #[test]
    fn malformed_references_are_refused() {
        assert_eq!(parse(""), None);
        assert_eq!(parse("registry.io/"), None);
        assert_eq!(parse("app:"), None);
        assert_eq!(parse("a//b"), None);
    }
}
