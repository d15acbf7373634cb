//! Who is in the cluster, as the checkpoint store tells it: every member writes a heartbeat,
//! `<pipeline>/members/<member>.json` — its partitions with their offsets and lag, the version of
//! each plugin it serves, its last batch — every [`heartbeat_every`], and deletes it when it
//! stops. The cluster view (`/api/status`, the dashboard, `sluice status`) and a cluster-wide
//! deploy's vote (`deploys.rs`: whose answer to wait for) read them.
//!
//! Kafka's group knows the members too, but only its leader learns who they are, and a member
//! that is alive but not yet assigned (or a zombie) is exactly what a deploy must hear from; a
//! heartbeat is one small PUT per member every few seconds.
//!
//! **Owns:** the `members/` objects' names and shape, who counts as live. **Never touches:**
//! anything else in the store; when to beat is the agent's.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::store::{CheckpointStore, StoreError};
use crate::receiver::PartitionStatus;

/// One member as its heartbeat describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Heartbeat {
    /// Its name (`cluster.member`).
    pub(crate) member: String,
    /// Its admin API (`http://host:port`), if it serves one.
    pub(crate) admin: Option<String>,
    /// When it wrote this, ms since the epoch.
    pub(crate) updated_ms: u64,
    /// The source partitions it owns, with their offsets and lag.
    pub(crate) partitions: Vec<PartitionStatus>,
    /// Each plugin's serving version (short hash).
    pub(crate) serving: BTreeMap<String, String>,
    /// Its last batch's time, once it ran one.
    pub(crate) last_batch_ms: Option<u64>,
}

/// How often a member writes its heartbeat: a third of the session timeout, within 0.25 to 5 s.
pub(crate) fn heartbeat_every(session_timeout: Duration) -> Duration {
    (session_timeout / 3).clamp(Duration::from_millis(250), Duration::from_secs(5))
}

/// The store key of `member`'s heartbeat.
fn key(member: &str) -> String {
    format!("members/{member}.json")
}

/// Writes this member's heartbeat.
pub(crate) fn beat(store: &CheckpointStore, heartbeat: &Heartbeat) -> Result<(), StoreError> {
    store.replace(&key(&heartbeat.member), serde_json::to_vec(heartbeat).expect("a heartbeat encodes"))
}

/// Removes this member's heartbeat (it leaves).
pub(crate) fn leave(store: &CheckpointStore, member: &str) -> Result<(), StoreError> {
    store.delete(&key(member))
}

/// The members whose heartbeat is fresh: written within `session_timeout` plus one heartbeat
/// period of `now_ms`. Unreadable heartbeats are skipped (logged), stale ones ignored.
pub(crate) fn live(
    store: &CheckpointStore,
    session_timeout: Duration,
    now_ms: u64,
) -> Result<Vec<Heartbeat>, StoreError> {
    let fresh = crate::fields::millis(session_timeout + heartbeat_every(session_timeout));
    let mut found = Vec::new();
    for name in store.names("members")? {
        let Some(body) = store.get(&format!("members/{name}"))? else { continue };
        match serde_json::from_slice::<Heartbeat>(&body) {
            Ok(beat) if beat.updated_ms + fresh >= now_ms => found.push(beat),
            Ok(_) => {}
            Err(err) => tracing::warn!(object = %name, "not a member's heartbeat: {err}"),
        }
    }
    found.sort_by(|a, b| a.member.cmp(&b.member));
    Ok(found)
}

/// The live members, read at most once per `fresh_for` (the dashboard asks every second).
#[derive(Debug, Default)]
pub(crate) struct View {
    last: Option<(Instant, Vec<Heartbeat>)>,
}

impl View {
    /// The members, from the last read if it is younger than `fresh_for`.
    pub(crate) fn members(
        &mut self,
        store: &CheckpointStore,
        session_timeout: Duration,
        fresh_for: Duration,
    ) -> Result<Vec<Heartbeat>, StoreError> {
        if let Some((at, members)) = &self.last
            && at.elapsed() < fresh_for
        {
            return Ok(members.clone());
        }
        let members = live(store, session_timeout, crate::block::now_ms())?;
        self.last = Some((Instant::now(), members.clone()));
        Ok(members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat_at(member: &str, updated_ms: u64) -> Heartbeat {
        Heartbeat {
            member: member.into(),
            admin: None,
            updated_ms,
            partitions: Vec::new(),
            serving: BTreeMap::from([("wordcount".into(), "abc".into())]),
            last_batch_ms: None,
        }
    }

    #[test]
    fn members_with_a_fresh_heartbeat_are_live_and_one_that_left_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let url = url::Url::from_directory_path(dir.path()).unwrap().to_string();
        let store = CheckpointStore::open(&url, "p").unwrap();
        let timeout = Duration::from_secs(3);
        assert!(live(&store, timeout, 10_000).unwrap().is_empty());
        beat(&store, &beat_at("b", 10_000)).unwrap();
        beat(&store, &beat_at("a", 9_000)).unwrap();
        beat(&store, &beat_at("stale", 1_000)).unwrap();
        let names: Vec<String> = live(&store, timeout, 10_500).unwrap().into_iter().map(|m| m.member).collect();
        assert_eq!(names, ["a", "b"]);
        leave(&store, "a").unwrap();
        let names: Vec<String> = live(&store, timeout, 10_500).unwrap().into_iter().map(|m| m.member).collect();
        assert_eq!(names, ["b"]);
    }
}
