//! Shadow plugins: a candidate runs after the chain on every event it takes, never changes a
//! verdict, and its disagreements reach the decision sink with both decisions.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use qgate_hooks::{DecisionKind, DecisionRecord, DecisionSink, Hooks, Verdict};
use qgate_host::{PluginHost, PluginSpec};
use qgate_ipc::K;

use super::{component, options, request, session};

/// A sink that keeps what it is given.
#[derive(Debug, Default)]
struct Kept(Mutex<Vec<DecisionRecord>>);

impl DecisionSink for Kept {
    fn include_text(&self) -> bool {
        true
    }

    fn include_bytes(&self) -> usize {
        0
    }

    fn record(&self, record: DecisionRecord) {
        self.0.lock().expect("not poisoned").push(record);
    }
}

impl Kept {
    /// The shadow records, once `count` have come (or after 30 s).
    async fn shadow_records(&self, count: usize) -> Vec<DecisionRecord> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let shadow: Vec<_> = self
                .0
                .lock()
                .expect("not poisoned")
                .iter()
                .filter(|record| record.live.is_some())
                .cloned()
                .collect();
            if shadow.len() >= count || Instant::now() > deadline {
                return shadow;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn allowlist(name: &str, functions: &[&str]) -> PluginSpec {
    let mut spec = PluginSpec::new(name, component("allowlist"));
    spec.config
        .insert("users".into(), serde_json::json!({ "alice": functions }));
    spec
}

fn call(name: &str) -> K {
    K::list(vec![K::symbol(name), K::long(1)])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_plugin_never_changes_a_verdict_and_its_disagreements_are_recorded() {
    let kept = Arc::new(Kept::default());
    let mut candidate = allowlist("candidate", &["f"]);
    candidate.shadow = true;
    let mut spin = PluginSpec::new("spin", component("spin"));
    spin.shadow = true;
    spin.time_budget = Duration::from_millis(20);
    let mut options = options(vec![allowlist("allowlist", &["f", "g"]), candidate, spin]);
    options.decisions = Some(kept.clone());
    let host = PluginHost::new(options).unwrap_or_else(|e| panic!("{e}"));

    // The live chain decides: f and g pass, h is denied, whatever the shadows say (the candidate
    // denies g; the spinning one runs out of its budget on everything, which denies).
    for (name, expected) in [("f", true), ("g", true), ("h", false)] {
        let verdict = host.on_sync(&session(), &request(&call(name))).await;
        assert_eq!(
            matches!(verdict, Verdict::Pass),
            expected,
            "{name}: {verdict:?}"
        );
    }

    // Disagreements: the candidate on g; the spinning shadow on f and g (it denies, the chain
    // passed), not on h (both deny).
    let mut shadow = kept.shadow_records(3).await;
    shadow.sort_by_key(|record| {
        (
            record.decided_by.as_deref().unwrap_or_default().to_owned(),
            record.head.as_deref().unwrap_or_default().to_owned(),
        )
    });
    let seen: Vec<_> = shadow
        .iter()
        .map(|record| {
            (
                record.decided_by.as_deref().unwrap_or_default().to_owned(),
                record.head.as_deref().unwrap_or_default().to_owned(),
                record.decision,
                record.live,
            )
        })
        .collect();
    let denied_passed = (DecisionKind::Denied, Some(DecisionKind::Passed));
    assert_eq!(
        seen,
        [
            (
                "candidate".into(),
                "g".into(),
                denied_passed.0,
                denied_passed.1
            ),
            ("spin".into(), "f".into(), denied_passed.0, denied_passed.1),
            ("spin".into(), "g".into(), denied_passed.0, denied_passed.1),
        ]
    );
    assert!(
        shadow[0]
            .reason
            .as_deref()
            .is_some_and(|why| why.contains("g is not allowed for alice")),
        "{:?}",
        shadow[0].reason
    );
    // The live decisions are recorded as such, one for each message.
    let live = kept
        .0
        .lock()
        .expect("not poisoned")
        .iter()
        .filter(|record| record.live.is_none())
        .count();
    assert_eq!(live, 3);
    // The shadows are loaded and listed, and take no part in the chain's status otherwise.
    assert_eq!(host.plugin_names(), ["allowlist", "candidate", "spin"]);
}
