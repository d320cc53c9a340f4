//! The results: the table on stdout, `results.json`, and the harness section of BENCHMARKS.md.
//!
//! Every record is one scenario metric on one target, with its median over the repetitions, the
//! repetitions themselves, and its ratio to the floor's median from the same run.
//! A target that was skipped or failed has records without a value and with the reason, so a
//! missing number is never shown as a measured one.

use std::{fmt::Write as _, path::Path, process::Command};

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::targets::Kind;

/// Which way a metric is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Better {
    /// Latency, memory.
    Lower,
    /// Throughput.
    Higher,
}

/// A goal from the issues, checked on one target's records.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Goal {
    /// The ratio to the floor is at most this.
    RatioAtMost(f64),
    /// The ratio to the floor is at least this.
    RatioAtLeast(f64),
    /// The value itself is at most this.
    ValueAtMost(f64),
    /// The ratio to HAProxy's value (the same hops in front of the same kind of floor) is at
    /// most this.
    HaproxyRatioAtMost(f64),
    /// The ratio to HAProxy's value is at least this.
    HaproxyRatioAtLeast(f64),
    /// The ratio to the pinned gateway's value without plugins (the same reply forwarded
    /// unfiltered) is at least this.
    GatewayRatioAtLeast(f64),
    /// The value exceeds the walkthrough chain's (`qgate-chain`, the same chain with the
    /// `allowlist`) by at most this, in the metric's unit.
    ChainAddedAtMost(f64),
    /// The ratio to the walkthrough chain's value (`qgate-chain`) is at most this.
    ChainRatioAtMost(f64),
}

impl Goal {
    /// The goal in words, for the table.
    pub(crate) fn text(self, unit: &str) -> String {
        match self {
            Self::RatioAtMost(r) => format!("≤ {r:.2}× floor"),
            Self::RatioAtLeast(r) => format!("≥ {r:.2}× floor"),
            Self::ValueAtMost(v) => format!("≤ {v} {unit}"),
            Self::HaproxyRatioAtMost(r) => format!("≤ {r:.2}× haproxy"),
            Self::HaproxyRatioAtLeast(r) => format!("≥ {r:.2}× haproxy"),
            Self::GatewayRatioAtLeast(r) => format!("≥ {r:.2}× gateway"),
            Self::ChainAddedAtMost(v) => format!("≤ +{v} {unit} over qgate-chain"),
            Self::ChainRatioAtMost(r) => format!("≤ {r:.2}× qgate-chain"),
        }
    }

    /// The number the goal is checked on: the value, or one of its ratios.
    pub(crate) fn measured(self, value: Option<f64>, ratios: Ratios) -> Option<f64> {
        match self {
            Self::RatioAtMost(_) | Self::RatioAtLeast(_) => ratios.floor,
            Self::ValueAtMost(_) => value,
            Self::HaproxyRatioAtMost(_) | Self::HaproxyRatioAtLeast(_) => ratios.haproxy,
            Self::GatewayRatioAtLeast(_) => ratios.gateway,
            Self::ChainAddedAtMost(_) => ratios.chain_added,
            Self::ChainRatioAtMost(_) => ratios.chain,
        }
    }

    /// Whether a value and its ratios meet the goal; `None` without the number it needs.
    pub(crate) fn met(self, value: Option<f64>, ratios: Ratios) -> Option<bool> {
        let x = self.measured(value, ratios)?;
        Some(match self {
            Self::RatioAtMost(r)
            | Self::HaproxyRatioAtMost(r)
            | Self::ValueAtMost(r)
            | Self::ChainAddedAtMost(r)
            | Self::ChainRatioAtMost(r) => x <= r,
            Self::RatioAtLeast(r) | Self::HaproxyRatioAtLeast(r) | Self::GatewayRatioAtLeast(r) => {
                x >= r
            }
        })
    }
}

/// A record's ratios to its baselines from the same run.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Ratios {
    /// To the floor.
    pub(crate) floor: Option<f64>,
    /// To HAProxy, for the targets compared with it.
    pub(crate) haproxy: Option<f64>,
    /// To the pinned gateway without plugins, for the entitlements targets.
    pub(crate) gateway: Option<f64>,
    /// Not a ratio: what the target adds over the walkthrough's chain (its value minus
    /// `qgate-chain`'s, paired by pass), for the chains compared with it.
    pub(crate) chain_added: Option<f64>,
    /// To the walkthrough's chain, for the chains compared with it.
    pub(crate) chain: Option<f64>,
}

/// What a scenario measures.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Metric {
    /// The scenario's short name.
    pub(crate) scenario: &'static str,
    /// The metric's name.
    pub(crate) name: &'static str,
    /// Its unit.
    pub(crate) unit: &'static str,
    /// Which way is better.
    pub(crate) better: Better,
    /// The issues' goals: which target each applies to, and the goal.
    pub(crate) goals: &'static [(Kind, Goal)],
}

/// A goal and whether the target met it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct GoalOutcome {
    /// The goal in words.
    pub(crate) goal: String,
    /// Whether it was met; `null` when there is no number.
    pub(crate) met: Option<bool>,
    /// The ratio it was checked on, when that ratio is not the one the table shows (the ratio to
    /// HAProxy).
    pub(crate) ratio: Option<f64>,
    /// The difference it was checked on, in the metric's unit, for a goal on what a target adds
    /// over another.
    pub(crate) added: Option<f64>,
}

/// One scenario metric on one target.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Record {
    pub(crate) scenario: &'static str,
    pub(crate) target: &'static str,
    pub(crate) metric: &'static str,
    pub(crate) unit: &'static str,
    pub(crate) better: Better,
    /// The median over the repetitions; `null` when the target was skipped or failed.
    pub(crate) value: Option<f64>,
    /// The median, over the repetitions, of this target's value divided by the floor's in the
    /// same pass (for every metric, whichever way is better). Pairing each repetition with the
    /// floor's from a few seconds before keeps slow drifts of a shared machine out of the ratio.
    pub(crate) ratio_to_floor: Option<f64>,
    /// The same with HAProxy's value as the baseline, for the gateway targets: the cost of their
    /// hop against HAProxy's over the same kind of floor.
    pub(crate) ratio_to_haproxy: Option<f64>,
    /// The same with the pinned gateway's value as the baseline, for the entitlements targets:
    /// what the plugin costs against the same reply forwarded unfiltered.
    pub(crate) ratio_to_gateway: Option<f64>,
    /// The median, over the repetitions, of this target's value minus `qgate-chain`'s in the
    /// same pass, for the chains that replace one of its plugins: what the replacement adds.
    pub(crate) added_to_chain: Option<f64>,
    /// Each repetition's value, in order.
    pub(crate) samples: Vec<f64>,
    /// `measured`, `skipped` or `failed`.
    pub(crate) status: &'static str,
    /// Why it was skipped or failed, or what to know about the number.
    pub(crate) note: Option<String>,
    /// The issues' goals for this target and metric.
    pub(crate) goals: Vec<GoalOutcome>,
}

/// A target as the run saw it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct TargetInfo {
    pub(crate) name: &'static str,
    pub(crate) description: &'static str,
    /// `measured`, `skipped` or `failed`.
    pub(crate) status: &'static str,
    pub(crate) note: Option<String>,
    /// Its answer to the ping call, in q syntax.
    pub(crate) ping_reply: Option<String>,
    /// The processes whose memory counts as the target's.
    pub(crate) processes: Vec<&'static str>,
}

/// The machine the run was on.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Machine {
    pub(crate) cores: usize,
    pub(crate) memory: String,
    pub(crate) cpu: String,
    pub(crate) kernel: String,
}

impl Machine {
    /// Reads the machine's description from `nproc`, `/proc/meminfo` and `/proc/cpuinfo`.
    pub(crate) fn probe() -> Self {
        let cores = command_output("nproc", &[])
            .and_then(|n| n.trim().parse().ok())
            .or_else(|| std::thread::available_parallelism().ok().map(Into::into))
            .unwrap_or(0);
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|info| {
                let kib: f64 = info
                    .lines()
                    .find_map(|line| line.strip_prefix("MemTotal:"))?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                Some(format!("{:.1} GiB", kib / 1024.0 / 1024.0))
            })
            .unwrap_or_else(|| "unknown".into());
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                let line = info.lines().find(|line| line.starts_with("model name"))?;
                Some(line.split_once(':')?.1.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = command_output("uname", &["-r"])
            .map(|k| k.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        Self {
            cores,
            memory,
            cpu,
            kernel,
        }
    }
}

/// The output of a small command, when it succeeds.
pub(crate) fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Everything a run produced: what `results.json` holds.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Results {
    /// The command line that produced it.
    pub(crate) command: String,
    /// `smoke`, `quick` or `full`.
    pub(crate) mode: &'static str,
    /// `date -u` at the start of the run.
    pub(crate) date: String,
    pub(crate) machine: Machine,
    /// What one repetition of each scenario does in this mode.
    pub(crate) method: Vec<String>,
    pub(crate) targets: Vec<TargetInfo>,
    pub(crate) records: Vec<Record>,
    /// How long the run took, in seconds.
    pub(crate) elapsed_secs: f64,
    /// `/proc/loadavg`'s 1, 5 and 15 minute averages when the run started and when it ended: the
    /// machine is shared, and a load above what the run itself adds means the numbers are noisier.
    pub(crate) load_average: [String; 2],
}

/// The first three fields of `/proc/loadavg`.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// A number with three significant digits or so, for the table.
fn number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else if magnitude >= 1e4 {
        format!("{:.1}k", value / 1e3)
    } else if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// A ratio with two significant digits below 0.1, two decimals otherwise.
fn ratio_text(ratio: f64) -> String {
    if ratio.abs() < 0.1 {
        format!("{ratio:.3}")
    } else {
        format!("{ratio:.2}")
    }
}

impl Results {
    /// The targets that appear in the table, in order.
    fn target_names(&self) -> Vec<&'static str> {
        self.targets.iter().map(|t| t.name).collect()
    }

    /// The results as a markdown table: one row per metric, one column per target with the value
    /// and its ratio to the floor, and qgate's goal.
    pub(crate) fn table(&self) -> String {
        let targets = self.target_names();
        let mut out = String::new();
        let _ = write!(out, "| scenario | metric | better |");
        for target in &targets {
            let _ = write!(out, " {target} |");
        }
        out.push_str(" goals |\n|---|---|---|");
        for _ in &targets {
            out.push_str("---:|");
        }
        out.push_str("---|\n");
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for record in &self.records {
            let key = (record.scenario, record.metric);
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            let _ = write!(
                out,
                "| {} | {} ({}) | {} |",
                record.scenario,
                record.metric,
                record.unit,
                match record.better {
                    Better::Lower => "lower",
                    Better::Higher => "higher",
                }
            );
            let mut goals = Vec::new();
            for target in &targets {
                let cell = self
                    .records
                    .iter()
                    .find(|r| (r.scenario, r.metric) == key && r.target == *target);
                let text = match cell {
                    Some(Record {
                        value: Some(value),
                        ratio_to_floor,
                        ..
                    }) => match ratio_to_floor {
                        Some(ratio) if *target != Kind::Floor.name() => {
                            format!("{} ({}×)", number(*value), ratio_text(*ratio))
                        }
                        _ => number(*value),
                    },
                    Some(record) => record.status.to_owned(),
                    None => "–".to_owned(),
                };
                let _ = write!(out, " {text} |");
                for goal in cell.map_or(&[][..], |record| &record.goals) {
                    let ratio = match (goal.ratio, goal.added) {
                        (Some(r), _) => format!(" ({}×)", ratio_text(r)),
                        (None, Some(added)) => format!(" ({added:+.1} {})", record.unit),
                        (None, None) => String::new(),
                    };
                    goals.push(format!(
                        "{target} {}{ratio}: {}",
                        goal.goal,
                        match goal.met {
                            Some(true) => "met",
                            Some(false) => "**missed**",
                            None => "no number",
                        }
                    ));
                }
            }
            let _ = writeln!(out, " {} |", goals.join("; "));
        }
        out
    }

    /// The notes under the table: what each target is, and why any is skipped or failed.
    fn notes(&self) -> String {
        let mut out = String::new();
        for target in &self.targets {
            let _ = write!(out, "- **{}**: {}", target.name, target.description);
            if let Some(reply) = &target.ping_reply {
                let _ = write!(out, "; answers the ping with `{reply}`");
            }
            if target.status != "measured" {
                let _ = write!(out, "; **{}**", target.status);
            }
            if let Some(note) = &target.note {
                let _ = write!(out, "; {note}");
            }
            out.push_str(".\n");
        }
        for record in &self.records {
            // A target that never started has its reason once, above.
            if let Some(note) = &record.note
                && !self
                    .targets
                    .iter()
                    .any(|t| t.name == record.target && t.status != "measured")
            {
                let status = if record.status == "measured" {
                    String::new()
                } else {
                    format!("{}: ", record.status)
                };
                let _ = writeln!(
                    out,
                    "- {} / {} on {}: {status}{note}.",
                    record.scenario, record.metric, record.target
                );
            }
        }
        out
    }

    /// The whole report as text for stdout.
    pub(crate) fn text(&self) -> String {
        format!(
            "qgate-bench ({} mode), {}\nmachine: {} cores, {}, {}; load average {} at the start, \
             {} at the end\n\n{}\nValues are medians over the repetitions; ratios are the median \
             of target / floor over the repetitions, each paired with the floor's of the same \
             pass (for throughput higher is better, for latency and memory lower).\n{}",
            self.mode,
            self.date,
            self.machine.cores,
            self.machine.memory,
            self.machine.cpu,
            self.load_average[0],
            self.load_average[1],
            self.table(),
            self.notes()
        )
    }

    /// The section that goes between the harness markers of BENCHMARKS.md.
    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Command: `{}`  ", self.command);
        let _ = writeln!(out, "Date: {}  ", self.date);
        let _ = writeln!(
            out,
            "Machine: {} cores ({}), {} memory, Linux {}; the load generator and the targets \
             share these cores.  ",
            self.machine.cores, self.machine.cpu, self.machine.memory, self.machine.kernel
        );
        let _ = writeln!(
            out,
            "Mode: {}, {:.0} s in all; load average {} at the start, {} at the end.\n",
            self.mode, self.elapsed_secs, self.load_average[0], self.load_average[1]
        );
        out.push_str(&self.table());
        out.push_str(
            "\nEach cell is the median over the repetitions; in brackets, the ratio to the floor \
             from the same run: the median over the repetitions of target / floor, each \
             repetition paired with the floor's of the same pass, a few seconds apart, so that \
             the shared machine's slow drifts cancel (higher is better for throughput, lower for \
             latency and memory).\n\n",
        );
        out.push_str(&self.notes());
        out.push_str("\nOne repetition of each scenario:\n\n");
        for line in &self.method {
            let _ = writeln!(out, "- {line}");
        }
        out
    }

    /// Writes `results.json`.
    pub(crate) fn write_json(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("failed to create {}", dir.display()))?;
        }
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("failed to write {}", path.display()))
    }

    /// Replaces the harness section of BENCHMARKS.md (between its markers), adding the section at
    /// the end, or creating the file, when there is none.
    pub(crate) fn write_markdown(&self, path: &Path) -> Result<()> {
        const BEGIN: &str = "<!-- harness:begin -->";
        const END: &str = "<!-- harness:end -->";
        let section = format!("{BEGIN}\n{}{END}", self.markdown());
        let old = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => "# Benchmarks\n".to_owned(),
            Err(err) => {
                return Err(err).with_context(|| format!("failed to read {}", path.display()));
            }
        };
        let new = match (old.find(BEGIN), old.find(END)) {
            (Some(begin), Some(end)) if begin < end => {
                format!("{}{section}{}", &old[..begin], &old[end + END.len()..])
            }
            _ => format!(
                "{}\n\n## Server harness\n\n`cargo xtask bench` (or `cargo run --release -p \
                 qgate-bench`) writes the table below; explanations follow it.\n\n{section}\n",
                old.trim_end()
            ),
        };
        std::fs::write(path, new).with_context(|| format!("failed to write {}", path.display()))
    }
}

/// Replaces the section of `path` between `<!-- TAG:begin -->` and `<!-- TAG:end -->` with
/// `section`, or appends it under `## HEADING` with a line naming `command` when the markers are
/// missing.
pub(crate) fn replace_section(
    path: &std::path::Path,
    tag: &str,
    heading: &str,
    command: &str,
    section: &str,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let begin = format!("<!-- {tag}:begin -->");
    let end = format!("<!-- {tag}:end -->");
    let section = format!("{begin}\n{section}{end}");
    let old = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(at), Some(to)) if at < to => {
            format!("{}{section}{}", &old[..at], &old[to + end.len()..])
        }
        _ => format!(
            "{}\n\n## {heading}\n\n`{command}` writes this section.\n\n{section}\n",
            old.trim_end()
        ),
    };
    std::fs::write(path, new).with_context(|| format!("failed to write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_read_the_ratio_they_name() {
        let ratios = Ratios {
            floor: Some(2.0),
            haproxy: Some(0.4),
            gateway: None,
            chain_added: None,
            chain: None,
        };
        assert_eq!(Goal::RatioAtMost(2.2).met(None, ratios), Some(true));
        assert_eq!(Goal::RatioAtLeast(2.5).met(None, ratios), Some(false));
        assert_eq!(Goal::HaproxyRatioAtMost(0.5).met(None, ratios), Some(true));
        assert_eq!(
            Goal::HaproxyRatioAtLeast(1.2).met(None, ratios),
            Some(false)
        );
        assert_eq!(Goal::ValueAtMost(20.0).met(Some(14.0), ratios), Some(true));
        assert_eq!(Goal::ValueAtMost(20.0).met(None, ratios), None);
        // Without HAProxy in the run, its goals have no number rather than a verdict.
        let alone = Ratios {
            floor: Some(2.0),
            haproxy: None,
            gateway: None,
            chain_added: None,
            chain: None,
        };
        assert_eq!(Goal::HaproxyRatioAtMost(0.5).met(None, alone), None);
        assert_eq!(
            Goal::HaproxyRatioAtLeast(1.2).text("q/s"),
            "≥ 1.20× haproxy"
        );
    }
}
