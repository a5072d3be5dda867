//! `tenantscale hpa replay`: the what-if tool Kubernetes never shipped.

use crate::{BadInput, read_input};
use std::path::Path;
use tenantscale_core::scaling::behavior::ConditionType;
use tenantscale_core::scaling::replay::{ReplayFile, StepOutput};
use tenantscale_core::yaml;

pub fn run(path: &Path, explain: bool) -> anyhow::Result<()> {
    let text = read_input(path)?;
    let bad = |e: String| BadInput(format!("{}: {e}", path.display()));
    let file: ReplayFile = yaml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let outputs = file.run().map_err(|e| {
        let line = yaml::line_of_nearest(&text, &e.path)
            .map(|l| format!(" (line {l})"))
            .unwrap_or_default();
        bad(format!("{}{line}: {}", e.path, e.message))
    })?;
    if explain {
        print!("{}", explain_table(&outputs));
    } else {
        let mut out = String::new();
        for o in &outputs {
            out.push_str(&serde_json::to_string(o)?);
            out.push('\n');
        }
        print!("{out}");
    }
    Ok(())
}

fn reason(o: &StepOutput, kind: ConditionType) -> String {
    o.conditions
        .get(kind)
        .map_or_else(|| "-".into(), |c| format!("{}={}", c.status, c.reason))
}

/// One row per step: what the controller saw and why it decided as it did.
fn explain_table(outputs: &[StepOutput]) -> String {
    let mut rows = vec![
        [
            "T",
            "CURRENT",
            "RECOMMENDATION",
            "DESIRED",
            "AbleToScale",
            "ScalingActive",
            "ScalingLimited",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for o in outputs {
        rows.push(vec![
            o.t.to_string(),
            o.current_replicas.to_string(),
            o.recommendation
                .map_or_else(|| "-".into(), |r| r.to_string()),
            o.desired_replicas.to_string(),
            reason(o, ConditionType::AbleToScale),
            reason(o, ConditionType::ScalingActive),
            reason(o, ConditionType::ScalingLimited),
        ]);
    }
    let mut out = String::new();
    out.push_str(&tenantscale_core::text::table(&rows));
    out
}
