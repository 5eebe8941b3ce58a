//! Storage keys, laid out as Kubernetes lays them out in etcd.

/// The root of every key the API server writes.
pub const ROOT: &str = "/registry/";

/// `/registry/<resource>/`: every object of a resource.
pub fn resource_prefix(resource: &str) -> String {
    format!("{ROOT}{resource}/")
}

/// `/registry/<resource>/<namespace>/`: the objects of one namespace.
pub fn namespace_prefix(resource: &str, namespace: &str) -> String {
    format!("{ROOT}{resource}/{namespace}/")
}

/// The key of one object (cluster-scoped objects have no namespace segment).
pub fn object_key(resource: &str, namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        format!("{ROOT}{resource}/{name}")
    } else {
        format!("{ROOT}{resource}/{namespace}/{name}")
    }
}

/// The end of the range of keys starting with `prefix` (etcd's "prefix end").
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: the range runs to the end of the keyspace.
    vec![0]
}

/// The key right after `key` in byte order (to continue a range after it).
pub fn key_after(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_kubernetes_layout() {
        assert_eq!(
            object_key("pods", "default", "web"),
            "/registry/pods/default/web"
        );
        assert_eq!(object_key("nodes", "", "n1"), "/registry/nodes/n1");
        assert_eq!(
            namespace_prefix("pods", "kube-system"),
            "/registry/pods/kube-system/"
        );
    }

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
    }
}
