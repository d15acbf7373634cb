//! The objects of a cluster-wide deploy in the checkpoint store, and the rule that decides one.
//! [`super::agent`] does the work; this file says what is where.
//!
//! Under `<pipeline>/`:
//!
//! - `plugins/<plugin>/<sha256>.wasm`: every version the cluster may serve, by content. Each
//!   member uploads the versions it starts with (so a rollback can return to them); a deploy
//!   uploads its own.
//! - `deploys/<plugin>/<seq>.proposal`: `{hash, action, proposer, created_ms}`, created (never
//!   overwritten) with `seq` one past the highest there.
//! - `deploys/<plugin>/<seq>.vote.<member>`: each live member's answer, `{member, accepted,
//!   reason}`, after loading and validating the version as a deploy outside a cluster would.
//! - `deploys/<plugin>/<seq>.decision`: written by the proposer once it can [`decide`]:
//!   `{"decision": "serve", "from_ms": F}` or `{"decision": "refused", "reason": ...}`.
//!
//! **Owns:** these objects' names and shapes, the vote rule ([`decide`]) and the swap's batch
//! time ([`serve_from`]). **Never touches:** the store itself (the agent reads and writes), the
//! registry.

use serde::{Deserialize, Serialize};

/// What a proposal asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Action {
    /// A new version (`sluice deploy`).
    Deploy,
    /// An earlier version again (`sluice rollback`, or an automatic rollback).
    Rollback,
}

impl Action {
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Deploy => "deploy",
            Self::Rollback => "rollback",
        }
    }
}

/// `<seq>.proposal`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Proposal {
    /// The version's SHA-256 (its `plugins/<plugin>/<hash>.wasm`).
    pub(crate) hash: String,
    pub(crate) action: Action,
    /// The member that proposed it (and decides it).
    pub(crate) proposer: String,
    /// When, ms since the epoch.
    pub(crate) created_ms: u64,
}

/// `<seq>.vote.<member>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Vote {
    pub(crate) member: String,
    pub(crate) accepted: bool,
    /// Why not, when refused.
    pub(crate) reason: Option<String>,
}

/// `<seq>.decision`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub(crate) enum Decision {
    /// Every member serves the version from the batch at `from_ms` on.
    Serve {
        /// A batch time.
        from_ms: u64,
    },
    /// Nobody swaps.
    Refused {
        /// Each refusal (`member: reason`), or who did not answer.
        reason: String,
    },
}

pub(crate) fn wasm_key(plugin: &str, hash: &str) -> String {
    format!("plugins/{plugin}/{hash}.wasm")
}

pub(crate) fn folder(plugin: &str) -> String {
    format!("deploys/{plugin}")
}

pub(crate) fn proposal_key(plugin: &str, seq: u64) -> String {
    format!("deploys/{plugin}/{seq:012}.proposal")
}

pub(crate) fn decision_key(plugin: &str, seq: u64) -> String {
    format!("deploys/{plugin}/{seq:012}.decision")
}

pub(crate) fn vote_key(plugin: &str, seq: u64, member: &str) -> String {
    format!("deploys/{plugin}/{seq:012}.vote.{member}")
}

/// One proposal as a listing of `deploys/<plugin>/` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Listed {
    pub(crate) proposal: bool,
    pub(crate) decision: bool,
    /// The vote objects' names.
    pub(crate) votes: Vec<String>,
}

/// The proposals in a listing of `deploys/<plugin>/`, by seq.
pub(crate) fn parse_listing(names: &[String]) -> std::collections::BTreeMap<u64, Listed> {
    let mut found: std::collections::BTreeMap<u64, Listed> = std::collections::BTreeMap::new();
    for name in names {
        let Some((seq, what)) = name.split_once('.') else { continue };
        let Ok(seq) = seq.parse::<u64>() else { continue };
        let listed = found.entry(seq).or_default();
        match what {
            "proposal" => listed.proposal = true,
            "decision" => listed.decision = true,
            vote if vote.starts_with("vote.") => listed.votes.push(name.clone()),
            _ => {}
        }
    }
    found
}

/// The decision, once there can be one: refused as soon as any member refused; served once
/// every live member accepted; refused naming who did not answer once `out_of_time`.
pub(crate) fn decide(live: &[String], votes: &[Vote], out_of_time: bool, waited: &str) -> Option<Result<(), String>> {
    let refusals: Vec<String> = votes
        .iter()
        .filter(|v| !v.accepted)
        .map(|v| format!("member {}: {}", v.member, v.reason.as_deref().unwrap_or("refused")))
        .collect();
    if !refusals.is_empty() {
        return Some(Err(refusals.join("; ")));
    }
    let silent: Vec<&str> =
        live.iter().filter(|m| !votes.iter().any(|v| &v.member == *m)).map(String::as_str).collect();
    if silent.is_empty() {
        return Some(Ok(()));
    }
    out_of_time.then(|| Err(format!("no answer within {waited} from {}", silent.join(", "))))
}

/// The first batch boundary (a multiple of `batch_ms`) at least `lead_ms` after `now_ms`.
pub(crate) fn serve_from(now_ms: u64, lead_ms: u64, batch_ms: u64) -> u64 {
    let batch_ms = batch_ms.max(1);
    (now_ms + lead_ms).div_ceil(batch_ms) * batch_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(member: &str, accepted: bool) -> Vote {
        Vote { member: member.into(), accepted, reason: (!accepted).then(|| "memory_limit".into()) }
    }

    #[test]
    fn one_refusal_refuses_for_all_and_every_live_member_must_accept() {
        let live: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert_eq!(decide(&live, &[vote("a", true)], false, "20s"), None, "waits for b and c");
        assert_eq!(decide(&live, &[vote("a", true), vote("b", true), vote("c", true)], false, "20s"), Some(Ok(())));
        assert_eq!(
            decide(&live, &[vote("a", true), vote("c", false)], false, "20s"),
            Some(Err("member c: memory_limit".into())),
            "a refusal decides at once"
        );
        assert_eq!(decide(&live, &[vote("a", true)], true, "20s"), Some(Err("no answer within 20s from b, c".into())));
        // A member that left (no fresh heartbeat) is not waited for; one that joined votes too.
        let now: Vec<String> = ["a", "d"].map(String::from).to_vec();
        assert_eq!(decide(&now, &[vote("a", true), vote("b", true), vote("d", true)], false, "20s"), Some(Ok(())));
    }

    #[test]
    fn a_listing_groups_objects_by_proposal() {
        let names: Vec<String> =
            ["000000000001.proposal", "000000000001.vote.m-1", "000000000001.vote.m.2", "000000000002.proposal", "x"]
                .map(String::from)
                .to_vec();
        let listed = parse_listing(&names);
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[&1].votes.len(), 2);
        assert!(listed[&1].proposal && !listed[&1].decision);
        assert!(listed[&2].votes.is_empty());
    }

    #[test]
    fn a_swap_serves_from_the_first_boundary_after_the_lead() {
        assert_eq!(serve_from(10_050, 2_000, 300), 12_300);
        assert_eq!(serve_from(10_000, 2_000, 1_000), 12_000);
    }

    #[test]
    fn decisions_read_as_written() {
        let serve: Decision = serde_json::from_str(r#"{"decision":"serve","from_ms":12300}"#).unwrap();
        assert_eq!(serve, Decision::Serve { from_ms: 12_300 });
        let text = serde_json::to_string(&Decision::Refused { reason: "x".into() }).unwrap();
        assert_eq!(text, r#"{"decision":"refused","reason":"x"}"#);
    }
}
