//! The data directory: created atomically on first start, and checked on every later start
//! so that a member never runs on a directory that is corrupt, belongs to another member or
//! cluster, or is not ours at all. It is never silently re-initialised.
//!
//! Layout: `<data-dir>/member/{FORMAT, IDENTITY, raft/, state/, snap/}`: the member's
//! identity (checksummed), two sled databases — the raft log, fsynced before every
//! acknowledgement, and the state machine, flushed lazily because the log can always
//! rebuild it — and state-machine snapshots.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use prost::Message;

use flotilla_proto::etcdlite::DataDirIdentity;
use flotilla_proto::etcdserverpb::Member;

use crate::config::EtcdConfig;

const FORMAT_FILE: &str = "FORMAT";
const FORMAT: &str = "etcd-lite data directory, format 2\n";
const IDENTITY_FILE: &str = "IDENTITY";

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// A filesystem operation failed.
    #[error("{path}: {op}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// sled refused to open the database.
    #[error("{path}: cannot open the database (is another member running on this data directory?)")]
    Open {
        /// The database path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: sled::Error,
    },
    /// The directory holds something that is not an etcd-lite member's data.
    #[error("{path}: {reason}; refusing to start rather than overwrite it")]
    Foreign {
        /// The data directory.
        path: PathBuf,
        /// What was found.
        reason: String,
    },
    /// The directory belongs to another member or cluster.
    #[error("{path}: {reason}; start with that member's flags or use another --data-dir")]
    Mismatch {
        /// The data directory.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },
    /// The data is damaged.
    #[error(
        "{path}: data is corrupt: {reason}; restore this member from a healthy one (wipe the directory and rejoin with --initial-cluster-state existing)"
    )]
    Corrupt {
        /// The data directory.
        path: PathBuf,
        /// What is damaged.
        reason: String,
    },
}

/// An opened, verified data directory.
pub struct DataDir {
    /// The database holding the raft log and the member's identity.
    pub raft_db: sled::Db,
    /// The database holding the state machine.
    pub state_db: sled::Db,
    /// Where state-machine snapshots are kept.
    pub snap_dir: PathBuf,
    /// Who this directory belongs to.
    pub identity: DataDirIdentity,
    /// Whether it was created by this start.
    pub fresh: bool,
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> DataDirError + 'a {
    move |source| DataDirError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

fn open_db(path: &Path) -> Result<sled::Db, DataDirError> {
    sled::Config::new()
        .path(path)
        // Values live in the in-memory MVCC index; sled's cache only needs the hot log tail.
        .cache_capacity(64 * 1024 * 1024)
        .mode(sled::Mode::HighThroughput)
        .open()
        .map_err(|source| match source {
            sled::Error::Corruption { .. } => DataDirError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("the database does not pass its checksums ({source})"),
            },
            source => DataDirError::Open {
                path: path.to_path_buf(),
                source,
            },
        })
}

/// The identity a member with this configuration writes on first start.
pub fn identity_for(cfg: &EtcdConfig) -> DataDirIdentity {
    DataDirIdentity {
        cluster_id: cfg.cluster_id(),
        member_id: cfg.my_id(),
        member_name: cfg.name.clone(),
        cluster_token: cfg.initial_cluster_token.clone(),
        members: cfg
            .initial_cluster
            .iter()
            .map(|m| Member {
                id: crate::config::member_id(&m.peer_urls, &cfg.initial_cluster_token),
                name: m.name.clone(),
                peer_ur_ls: m.peer_urls.clone(),
                client_ur_ls: Vec::new(),
                is_learner: false,
            })
            .collect(),
    }
}

/// Opens the data directory, creating it if it does not exist.
pub fn open(cfg: &EtcdConfig) -> Result<DataDir, DataDirError> {
    let root = &cfg.data_dir;
    let member = root.join("member");
    if !member.exists() {
        refuse_foreign_content(root)?;
        create(cfg, &member)?;
        let mut dir = open_existing(root, &member)?;
        dir.fresh = true;
        return Ok(dir);
    }
    let dir = open_existing(root, &member)?;
    let want = identity_for(cfg);
    let have = &dir.identity;
    if have.member_name != want.member_name {
        return Err(DataDirError::Mismatch {
            path: root.clone(),
            reason: format!(
                "it belongs to member {:?}, not --name {:?}",
                have.member_name, want.member_name
            ),
        });
    }
    if have.cluster_token != want.cluster_token {
        return Err(DataDirError::Mismatch {
            path: root.clone(),
            reason: format!(
                "it belongs to the cluster with token {:?}, not --initial-cluster-token {:?}",
                have.cluster_token, want.cluster_token
            ),
        });
    }
    Ok(dir)
}

/// A directory that holds a real etcd's data (or anything else) is not ours to take over.
fn refuse_foreign_content(root: &Path) -> Result<(), DataDirError> {
    if root.join("member").join("wal").exists() {
        return Err(DataDirError::Foreign {
            path: root.to_path_buf(),
            reason: "it holds an etcd server's data (member/wal)".into(),
        });
    }
    Ok(())
}

/// Builds the directory under a temporary name and renames it into place, so a crash during
/// creation leaves nothing that looks like a member's data.
fn create(cfg: &EtcdConfig, member: &Path) -> Result<(), DataDirError> {
    let root = &cfg.data_dir;
    let tmp = root.join("member.init");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp, "removing a half-created directory"))?;
    }
    fs::create_dir_all(tmp.join("snap")).map_err(io_err(&tmp, "creating"))?;
    // A plain file, not a sled record: sled releases its file lock only when its background
    // threads let go, which would race with reopening the database right after the rename.
    let identity = tmp.join(IDENTITY_FILE);
    let body = identity_for(cfg).encode_to_vec();
    let mut record = crc32fast::hash(&body).to_be_bytes().to_vec();
    record.extend_from_slice(&body);
    fs::write(&identity, record).map_err(io_err(&identity, "writing"))?;
    fsync_file(&identity)?;
    let format = tmp.join(FORMAT_FILE);
    fs::write(&format, FORMAT).map_err(io_err(&format, "writing"))?;
    fsync_file(&format)?;
    fs::rename(&tmp, member).map_err(io_err(member, "renaming into place"))?;
    fsync_dir(root)
}

fn open_existing(root: &Path, member: &Path) -> Result<DataDir, DataDirError> {
    let format = member.join(FORMAT_FILE);
    match fs::read_to_string(&format) {
        Ok(s) if s == FORMAT => {}
        Ok(s) => {
            return Err(DataDirError::Foreign {
                path: root.to_path_buf(),
                reason: format!("unknown data format {:?}", s.trim()),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            refuse_foreign_content(root)?;
            return Err(DataDirError::Foreign {
                path: root.to_path_buf(),
                reason: "member/ exists but is not an etcd-lite data directory".into(),
            });
        }
        Err(e) => return Err(io_err(&format, "reading")(e)),
    }
    let identity = read_identity(root, &member.join(IDENTITY_FILE))?;
    let db = open_db(&member.join("raft"))?;
    let state_db = open_db(&member.join("state"))?;
    let snap_dir = member.join("snap");
    fs::create_dir_all(&snap_dir).map_err(io_err(&snap_dir, "creating"))?;
    Ok(DataDir {
        raft_db: db,
        state_db,
        snap_dir,
        identity,
        fresh: false,
    })
}

fn read_identity(root: &Path, path: &Path) -> Result<DataDirIdentity, DataDirError> {
    let corrupt = |reason: String| DataDirError::Corrupt {
        path: root.to_path_buf(),
        reason,
    };
    let raw = match fs::read(path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(corrupt("the member identity file is missing".into()));
        }
        Err(e) => return Err(io_err(path, "reading")(e)),
    };
    if raw.len() < 4 {
        return Err(corrupt("the member identity file is truncated".into()));
    }
    let (crc, body) = raw.split_at(4);
    if crc32fast::hash(body).to_be_bytes() != crc {
        return Err(corrupt(
            "the member identity file fails its checksum".into(),
        ));
    }
    DataDirIdentity::decode(body)
        .map_err(|e| corrupt(format!("the member identity file does not decode: {e}")))
}

/// Flushes a file's contents to disk.
pub fn fsync_file(path: &Path) -> Result<(), DataDirError> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err(path, "syncing"))
}

/// Makes a rename or create inside `dir` durable.
pub fn fsync_dir(dir: &Path) -> Result<(), DataDirError> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_err(dir, "syncing directory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path, name: &str, token: &str) -> EtcdConfig {
        let url = "http://127.0.0.1:2380".to_string();
        EtcdConfig {
            name: name.into(),
            data_dir: dir.to_path_buf(),
            initial_advertise_peer_urls: vec![url.clone()],
            initial_cluster: vec![crate::config::InitialMember {
                name: name.into(),
                peer_urls: vec![url],
            }],
            initial_cluster_token: token.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_fresh_directory_is_created_and_reopened_with_its_identity() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let c = cfg(tmp.path(), "m1", "t");
        let d = open(&c).expect("create");
        assert!(d.fresh);
        assert_eq!(d.identity.member_name, "m1");
        drop(d);
        let d = open(&c).expect("reopen");
        assert!(!d.fresh);
    }

    #[test]
    fn another_members_directory_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        drop(open(&cfg(tmp.path(), "m1", "t")).expect("create"));
        let err = open(&cfg(tmp.path(), "m2", "t")).err().expect("refused");
        assert!(
            err.to_string().contains("belongs to member \"m1\""),
            "{err}"
        );
        let err = open(&cfg(tmp.path(), "m1", "other"))
            .err()
            .expect("refused");
        assert!(err.to_string().contains("token"), "{err}");
    }

    #[test]
    fn an_etcd_data_directory_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(tmp.path().join("member/wal")).expect("mkdir");
        let err = open(&cfg(tmp.path(), "m1", "t")).err().expect("refused");
        assert!(err.to_string().contains("etcd server's data"), "{err}");
    }

    #[test]
    fn a_damaged_or_missing_identity_is_corruption() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let c = cfg(tmp.path(), "m1", "t");
        drop(open(&c).expect("create"));
        let identity = tmp.path().join("member").join(IDENTITY_FILE);
        let mut raw = fs::read(&identity).expect("identity");
        raw[6] ^= 0x40;
        fs::write(&identity, raw).expect("damage");
        let err = open(&c).err().expect("refused");
        assert!(err.to_string().contains("checksum"), "{err}");
        fs::remove_file(&identity).expect("remove");
        let err = open(&c).err().expect("refused");
        assert!(
            err.to_string().contains("identity file is missing"),
            "{err}"
        );
    }
}
