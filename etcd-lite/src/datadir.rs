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
/// How often sled flushes the state database in the background.
const STATE_FLUSH_MS: u64 = 5_000;
/// Present from creation until the first start has created the databases.
const NEW_FILE: &str = "NEW";
/// The member's two sled databases: the raft log, and the state machine.
const DATABASES: [&str; 2] = ["raft", "state"];
/// The file holding a sled database's log; sled creates it when it is missing.
const SLED_FILE: &str = "db";

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
    /// Another process holds the database (sled's file lock).
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
    /// The raft log's high-water mark (see `raft::commit_mark`).
    pub commit_mark: PathBuf,
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

fn open_db(path: &Path, background_flush: Option<u64>) -> Result<sled::Db, DataDirError> {
    sled::Config::new()
        .path(path)
        // Values live in the in-memory MVCC index; sled's cache only needs the hot log tail.
        .cache_capacity(64 * 1024 * 1024)
        .mode(sled::Mode::HighThroughput)
        .flush_every_ms(background_flush)
        .open()
        .map_err(|source| match source {
            // sled reports a lock held by another process as a plain I/O error.
            sled::Error::Io(ref e) if e.to_string().contains("could not acquire lock") => {
                DataDirError::Open {
                    path: path.to_path_buf(),
                    source,
                }
            }
            sled::Error::Io(e) => DataDirError::Io {
                path: path.to_path_buf(),
                op: "opening the database",
                source: e,
            },
            // Corruption, but also a settings file (conf) that fails its checksum, which
            // sled reports as Unsupported.
            source => DataDirError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("the database cannot be read ({source})"),
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
///
/// Everything that can be checked without the databases (format, identity, whose it is) is
/// checked before they are opened: opening a sled database writes to it (recovery, a new
/// snapshot file), and a directory that is refused must be left exactly as it was.
pub fn open(cfg: &EtcdConfig) -> Result<DataDir, DataDirError> {
    let root = &cfg.data_dir;
    let member = root.join("member");
    if !member.exists() {
        refuse_foreign_content(root)?;
        create(cfg, &member)?;
    }
    let identity = read_member(root, &member)?;
    let want = identity_for(cfg);
    if identity.member_name != want.member_name {
        return Err(DataDirError::Mismatch {
            path: root.clone(),
            reason: format!(
                "it belongs to member {:?}, not --name {:?}",
                identity.member_name, want.member_name
            ),
        });
    }
    if identity.cluster_token != want.cluster_token {
        return Err(DataDirError::Mismatch {
            path: root.clone(),
            reason: format!(
                "it belongs to the cluster with token {:?}, not --initial-cluster-token {:?}",
                identity.cluster_token, want.cluster_token
            ),
        });
    }
    open_databases(root, &member, identity)
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
    // The databases are created by the first start, which then removes this marker: from
    // then on a missing database is a lost one, not one still to be made. (Creating them
    // here would race with reopening them after the rename: sled releases its file lock
    // only when its background threads let go.)
    let new = tmp.join(NEW_FILE);
    fs::write(&new, b"").map_err(io_err(&new, "writing"))?;
    fsync_file(&new)?;
    fs::rename(&tmp, member).map_err(io_err(member, "renaming into place"))?;
    fsync_dir(root)
}

/// Checks the format marker and reads the member's identity, touching nothing.
fn read_member(root: &Path, member: &Path) -> Result<DataDirIdentity, DataDirError> {
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
    read_identity(root, &member.join(IDENTITY_FILE))
}

/// Opens the two databases. Outside the first start they must exist: sled creates a
/// missing one empty, and a member that had lost its raft log or state would then start as
/// if new.
fn open_databases(
    root: &Path,
    member: &Path,
    identity: DataDirIdentity,
) -> Result<DataDir, DataDirError> {
    let new = member.join(NEW_FILE);
    let fresh = new.exists();
    if !fresh {
        for name in DATABASES {
            let file = member.join(name).join(SLED_FILE);
            match fs::metadata(&file) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(DataDirError::Corrupt {
                        path: root.to_path_buf(),
                        reason: format!(
                            "the {name} database (member/{name}/{SLED_FILE}) is missing"
                        ),
                    });
                }
                Err(e) => return Err(io_err(&file, "reading")(e)),
            }
        }
    }
    // The raft log is flushed by the Ready loop before anything depends on it; a background
    // flush on top only competes with it for the disk. The state database is flushed
    // before every log truncation, and otherwise now and then to bound the replay after a
    // crash: rarely, because each flush's burst of writes delays the log's own fsyncs.
    let raft_db = open_db(&member.join(DATABASES[0]), None)?;
    let state_db = open_db(&member.join(DATABASES[1]), Some(STATE_FLUSH_MS))?;
    if fresh {
        for (name, db) in DATABASES.iter().zip([&raft_db, &state_db]) {
            db.flush().map_err(|source| DataDirError::Io {
                path: member.join(name),
                op: "flushing the new database",
                source: source.into(),
            })?;
        }
        fs::remove_file(&new).map_err(io_err(&new, "removing"))?;
        fsync_dir(member)?;
    }
    let snap_dir = member.join("snap");
    fs::create_dir_all(&snap_dir).map_err(io_err(&snap_dir, "creating"))?;
    Ok(DataDir {
        raft_db,
        state_db,
        snap_dir,
        commit_mark: member.join("COMMITTED"),
        identity,
        fresh,
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

    /// Every file under `dir` with its contents.
    fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for entry in fs::read_dir(&d).expect("read_dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    todo.push(path);
                } else {
                    let bytes = fs::read(&path).expect("read");
                    out.push((path, bytes));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_refused_directory_is_left_exactly_as_it_was() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = open(&cfg(tmp.path(), "m1", "t")).expect("create");
        d.raft_db.insert(b"k", b"v").expect("insert");
        d.raft_db.flush().expect("flush");
        drop(d);
        let before = files(tmp.path());
        assert!(open(&cfg(tmp.path(), "m2", "t")).is_err());
        assert!(open(&cfg(tmp.path(), "m1", "other")).is_err());
        assert!(
            files(tmp.path()) == before,
            "a refusal changed the directory"
        );
    }

    #[test]
    fn a_missing_database_is_corruption_not_a_fresh_start() {
        for name in DATABASES {
            let tmp = tempfile::tempdir().expect("tempdir");
            let c = cfg(tmp.path(), "m1", "t");
            drop(open(&c).expect("create"));
            fs::remove_dir_all(tmp.path().join("member").join(name)).expect("remove");
            let err = open(&c).err().expect("refused");
            assert!(
                err.to_string().contains(&format!(
                    "the {name} database (member/{name}/db) is missing"
                )),
                "{err}"
            );
            assert!(!tmp.path().join("member").join(name).exists());
        }
    }

    #[test]
    fn a_damaged_database_settings_file_is_corruption_not_a_lock() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let c = cfg(tmp.path(), "m1", "t");
        drop(open(&c).expect("create"));
        let conf = tmp.path().join("member/raft/conf");
        let mut raw = fs::read(&conf).expect("conf");
        raw[10] ^= 0x20;
        fs::write(&conf, raw).expect("damage");
        let err = open(&c).err().expect("refused");
        assert!(matches!(err, DataDirError::Corrupt { .. }), "{err}");
        assert!(!err.to_string().contains("another member"), "{err}");
    }

    #[test]
    fn a_database_in_use_is_refused_as_in_use() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let c = cfg(tmp.path(), "m1", "t");
        let running = open(&c).expect("create");
        let err = open(&c).err().expect("refused");
        assert!(
            err.to_string()
                .contains("is another member running on this data directory?"),
            "{err}"
        );
        drop(running);
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
