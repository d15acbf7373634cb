//! `sluice status --cluster`: a cluster's view (`/api/status`'s `cluster`, read from the
//! members' heartbeats) as a table a person reads.
//!
//! **Owns:** the table's layout. **Never touches:** the admin API (the caller asks it).

use serde_json::Value;

/// The table of the cluster in `status` (the JSON of `/api/status`), or why there is none.
pub(super) fn cluster_table(status: &str) -> Result<String, String> {
    let status: Value = serde_json::from_str(status).map_err(|err| format!("the answer is no JSON: {err}"))?;
    let cluster = status.get("cluster").filter(|c| !c.is_null()).ok_or("this engine runs no [cluster]")?;
    let members = cluster["members"].as_array().cloned().unwrap_or_default();
    let mut out = format!(
        "cluster {} — {} live member{} (asked: {}), store {}\n",
        text(&cluster["group_id"]),
        members.len(),
        if members.len() == 1 { "" } else { "s" },
        text(&cluster["member"]),
        text(&cluster["checkpoint_store"]),
    );
    if let Some(error) = cluster["members_error"].as_str() {
        out.push_str(&format!("(the members' heartbeats could not be read: {error})\n"));
    }
    let rows: Vec<[String; 5]> = members.iter().map(row).collect();
    let header = ["MEMBER", "LAST BATCH", "SERVING", "PARTITIONS (LAG)", "ADMIN"].map(String::from);
    let widths: Vec<usize> =
        (0..5).map(|i| rows.iter().chain([&header]).map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    for line in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = line.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    Ok(out.trim_end().to_string())
}

fn text(value: &Value) -> String {
    value.as_str().map_or_else(|| "-".to_string(), str::to_string)
}

/// One member's row.
fn row(member: &Value) -> [String; 5] {
    let serving: Vec<String> = member["serving"]
        .as_object()
        .map(|s| s.iter().map(|(plugin, hash)| format!("{plugin}@{}", text(hash))).collect())
        .unwrap_or_default();
    let partitions: Vec<String> = member["partitions"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .map(|p| {
                    let lag = p["lag"].as_i64().map_or_else(|| "-".to_string(), |lag| lag.to_string());
                    format!("{}/{} ({lag})", text(&p["topic"]), p["partition"])
                })
                .collect()
        })
        .unwrap_or_default();
    [
        text(&member["member"]),
        member["last_batch_ms"].as_u64().map_or_else(|| "-".to_string(), |t| t.to_string()),
        if serving.is_empty() { "-".to_string() } else { serving.join(" ") },
        if partitions.is_empty() { "none".to_string() } else { partitions.join(", ") },
        text(&member["admin"]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_prints_a_row_per_member_with_its_partitions_and_versions() {
        let status = serde_json::json!({ "cluster": {
            "group_id": "g", "member": "pod-a", "checkpoint_store": "s3://b/p",
            "members": [
                { "member": "pod-a", "admin": "http://10.0.0.1:4040", "last_batch_ms": 1000, "serving": { "wc": "abc123" },
                  "partitions": [ { "topic": "lines", "partition": 0, "lag": 12 }, { "topic": "lines", "partition": 3, "lag": null } ] },
                { "member": "pod-b", "admin": null, "last_batch_ms": null, "serving": {}, "partitions": [] }
            ]
        }});
        let table = cluster_table(&status.to_string()).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "cluster g — 2 live members (asked: pod-a), store s3://b/p");
        assert!(lines[1].starts_with("MEMBER  LAST BATCH  SERVING"), "{table}");
        assert!(
            lines[2].contains("pod-a")
                && lines[2].contains("wc@abc123")
                && lines[2].contains("lines/0 (12), lines/3 (-)"),
            "{table}"
        );
        assert!(lines[3].starts_with("pod-b") && lines[3].contains("none"), "{table}");
        assert_eq!(
            cluster_table(&serde_json::json!({ "cluster": null }).to_string()).unwrap_err(),
            "this engine runs no [cluster]"
        );
    }
}
