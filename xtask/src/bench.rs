//! `cargo xtask bench [--quick] [--report-only]`: runs the codec benchmarks and writes the
//! comparison with kdbplus into BENCHMARKS.md, runs the q parser's benchmark, the chain's on
//! free text and the plugin call benchmark and writes their sections (see `parser`, `chain` and
//! `calls`), then runs the server harness (`qgate-bench`, see `harness`; not with
//! `--report-only`).
//!
//! The benchmarks are `crates/ipc/benches/codec.rs` (criterion). After the run, each benchmark's
//! median is read from criterion's `target/criterion/<group>/<codec>/<value>/new/estimates.json`,
//! and every qgate figure is put next to kdbplus's for the same group and value.
//! The ratio is kdbplus's time over qgate's, which is qgate's throughput over kdbplus's; the
//! project's target is at least 2 for decoding and for encoding.
//! The table goes to stdout and into BENCHMARKS.md between `<!-- codec:begin -->` and
//! `<!-- codec:end -->`, with the command, the date and the machine.

use std::{
    collections::BTreeMap,
    env, fs,
    path::{Path, PathBuf},
    process::Command,
    time::SystemTime,
};

use anyhow::{Context, Result, bail};

use crate::{cargo, project_root, run_command};

const USAGE: &str = "usage: cargo xtask bench [--quick] [--report-only]";

/// The markers around the generated section of BENCHMARKS.md.
const BEGIN: &str = "<!-- codec:begin -->";
const END: &str = "<!-- codec:end -->";

/// The throughput ratio over kdbplus that qgate aims for.
const TARGET_RATIO: f64 = 2.0;

/// The groups that have the 2x target, and the order in which groups are listed.
const TARGET_GROUPS: [&str; 2] = ["decode", "encode"];
const GROUP_ORDER: [&str; 6] = [
    "decode",
    "encode",
    "encode_compressed",
    "compress",
    "decompress",
    "view",
];

/// Runs the benchmarks (unless `--report-only`), then reports.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let mut quick = false;
    let mut report_only = false;
    for arg in args {
        match arg.as_str() {
            "--quick" => quick = true,
            "--report-only" => report_only = true,
            other => bail!("unknown argument `{other}` ({USAGE})"),
        }
    }
    // Results older than this run are left out, so that a renamed benchmark's old figures do not
    // linger in the table.
    let (what, started) = run_criterion("qgate-ipc", "codec", quick, report_only)?;
    let criterion = target_dir().join("criterion");
    let results = read_results(&criterion, started)?;
    if results.is_empty() {
        bail!(
            "no benchmark results under {} (run `cargo xtask bench` first)",
            criterion.display()
        );
    }
    write_section(
        (BEGIN, END, "## Codec"),
        &what,
        report_only,
        &table(&results),
    )?;
    parser(quick, report_only)?;
    chain(quick, report_only)?;
    calls(quick, report_only)?;
    if report_only {
        return Ok(());
    }
    harness(quick)
}

/// The markers around the parser's section of BENCHMARKS.md.
const PARSER_BEGIN: &str = "<!-- parser:begin -->";
const PARSER_END: &str = "<!-- parser:end -->";

/// The parser's benchmarks (`crates/q/benches/parse.rs`): criterion group, what it measures, and
/// its target in nanoseconds, if it has one.
const PARSER_ROWS: [(&str, &str, Option<f64>); 3] = [
    (
        "parse_and_facts",
        "parse plus facts of a 100-character qSQL select",
        Some(2_000.0),
    ),
    ("parse", "parse alone, the same select", None),
    ("shape", "shape of the parsed select", None),
];

/// Runs the q parser's benchmark (unless `report_only`) and writes its section of BENCHMARKS.md
/// from criterion's `target/criterion/<group>/select_100/new/estimates.json`.
fn parser(quick: bool, report_only: bool) -> Result<()> {
    let (what, started) = run_criterion("qgate-q", "parse", quick, report_only)?;
    let criterion = target_dir().join("criterion");
    let mut rows = Vec::new();
    for (group, description, target) in PARSER_ROWS {
        let estimates = criterion.join(group).join("select_100/new/estimates.json");
        if let Some(median_ns) = fresh_median(&estimates, started)? {
            rows.push((group, description, target, median_ns));
        }
    }
    if rows.is_empty() {
        bail!(
            "no parser benchmark results under {} (run `cargo xtask bench` first)",
            criterion.display()
        );
    }
    write_section(
        (PARSER_BEGIN, PARSER_END, "## q parser"),
        &what,
        report_only,
        &parser_table(&rows),
    )
}

/// The parser's table, in markdown: one row a benchmark, its median and its verdict.
fn parser_table(rows: &[(&str, &str, Option<f64>, f64)]) -> String {
    let mut out = String::from("| benchmark | what | median | target |\n|---|---|--:|---|\n");
    for (group, description, target, median_ns) in rows {
        let verdict = match target {
            Some(target) if median_ns <= target => format!("≤ {}: met", duration(*target)),
            Some(target) => format!("≤ {}: **missed**", duration(*target)),
            None => "—".to_owned(),
        };
        out.push_str(&format!(
            "| {group}/select_100 | {description} | {} | {verdict} |\n",
            duration(*median_ns)
        ));
    }
    out
}

/// The markers around the chain's section of BENCHMARKS.md.
const CHAIN_BEGIN: &str = "<!-- chain:begin -->";
const CHAIN_END: &str = "<!-- chain:end -->";

/// The project's target for what the allowlist deciding on a query's facts adds to the
/// walkthrough chain's handling of it, in nanoseconds.
const CHAIN_FACTS_TARGET_NS: f64 = 3_000.0;

/// Runs the chain benchmark (`crates/host/benches/chain.rs`, unless `report_only`) and writes its
/// section of BENCHMARKS.md: the chain on a free-text select passed whole, the same with the
/// allowlist deciding on its facts, and the difference against its target.
fn chain(quick: bool, report_only: bool) -> Result<()> {
    if !report_only {
        // The benchmark loads the components `cargo xtask plugins` builds.
        crate::plugins::run(&[])?;
    }
    let (what, started) = run_criterion("qgate-host", "chain", quick, report_only)?;
    let criterion = target_dir().join("criterion").join("chain");
    let read = |name: &str| -> Result<f64> {
        let estimates = criterion.join(name).join("new/estimates.json");
        fresh_median(&estimates, started)?.with_context(|| {
            format!(
                "no fresh result at {} (run `cargo xtask bench` first)",
                estimates.display()
            )
        })
    };
    let table = chain_table(
        read("text_whole")?,
        read("text_facts")?,
        read("facts_added")?,
    );
    write_section(
        (CHAIN_BEGIN, CHAIN_END, "## Free text through the chain"),
        &what,
        report_only,
        &table,
    )
}

/// The chain's table, in markdown: the two medians, and the difference measured in pairs with its
/// verdict.
fn chain_table(whole_ns: f64, facts_ns: f64, added: f64) -> String {
    let verdict = if added <= CHAIN_FACTS_TARGET_NS {
        format!("≤ {}: met", duration(CHAIN_FACTS_TARGET_NS))
    } else {
        format!("≤ {}: **missed**", duration(CHAIN_FACTS_TARGET_NS))
    };
    format!(
        "| benchmark | what | median | target |\n|---|---|--:|---|\n\
         | chain/text_whole | the walkthrough's chain on a 100-character select, the allowlist \
         passing free text whole | {} | — |\n\
         | chain/text_facts | the same, the allowlist deciding on the select's facts | {} | — |\n\
         | chain/facts_added | text_facts − text_whole, measured in pairs of calls | {} | \
         {verdict} |\n",
        duration(whole_ns),
        duration(facts_ns),
        duration(added)
    )
}

/// The markers around the plugin calls' section of BENCHMARKS.md.
const CALLS_BEGIN: &str = "<!-- calls:begin -->";
const CALLS_END: &str = "<!-- calls:end -->";

/// What a plugin call may cost beyond an empty component call, in nanoseconds.
const CALL_COST_TARGET_NS: f64 = 500.0;

/// The rows of `crates/host/benches/call.rs`: benchmark, what it measures, and whether it is a
/// plugin call each time (its cost beyond the host alone and an empty call has the target).
const CALL_ROWS: [(&str, &str, bool); 10] = [
    ("empty", "an empty component call (the baseline)", false),
    (
        "none",
        "the host with no plugin: the chain's own work and the benchmark's `block_on`",
        false,
    ),
    (
        "pass",
        "a plugin that passes without asking anything (`spin`, `turns = 0`): a call each time",
        true,
    ),
    (
        "echo",
        "`echo`: a call each time (its reply never stands)",
        true,
    ),
    (
        "version-a",
        "a fixture that asks for the summary, then passes (`ping` is not its query): a call each time",
        true,
    ),
    ("conns", "`conns`: its pass stands for the function", false),
    (
        "audit",
        "`audit`: no event under the bench's log filter",
        false,
    ),
    (
        "allowlist",
        "`allowlist`: its pass stands for the function",
        false,
    ),
    (
        "demo-api",
        "`demo-api`: its error stands for the function",
        false,
    ),
    ("chain", "the four together", false),
];

/// Runs the plugin call benchmark (`crates/host/benches/call.rs`, unless `report_only`) and
/// writes its section of BENCHMARKS.md: each row's median, and what a plugin call costs beyond
/// an empty component call measured in the same run.
fn calls(quick: bool, report_only: bool) -> Result<()> {
    if !report_only {
        crate::plugins::run(&[])?;
    }
    let (what, started) = run_criterion("qgate-host", "call", quick, report_only)?;
    let criterion = target_dir().join("criterion").join("call");
    let mut medians = Vec::new();
    for (name, description, each) in CALL_ROWS {
        let estimates = criterion.join(name).join("new/estimates.json");
        let median_ns = fresh_median(&estimates, started)?.with_context(|| {
            format!(
                "no fresh result at {} (run `cargo xtask bench` first)",
                estimates.display()
            )
        })?;
        medians.push((name, description, each, median_ns));
    }
    write_section(
        (CALLS_BEGIN, CALLS_END, "## The plugin path"),
        &what,
        report_only,
        &calls_table(&medians),
    )
}

/// The plugin calls' table, in markdown: each median, and for a plugin call each time, its cost
/// beyond an empty call, and beyond the host alone (`none`) and an empty call, with the target's
/// verdict on the second: what calling the plugin adds to the host, less what the engine itself
/// costs a call.
fn calls_table(rows: &[(&str, &str, bool, f64)]) -> String {
    let median = |wanted: &str| {
        rows.iter()
            .find(|(name, ..)| *name == wanted)
            .map_or(0.0, |row| row.3)
    };
    let (empty, none) = (median("empty"), median("none"));
    let mut out = String::from(
        "| benchmark | what | median | beyond an empty call | the call's own cost | target |\n\
         |---|---|--:|--:|--:|---|\n",
    );
    for (name, description, each, median_ns) in rows {
        let (beyond, own, verdict) = if *each {
            let own = median_ns - none - empty;
            let met = if own <= CALL_COST_TARGET_NS {
                "met"
            } else {
                "**missed**"
            };
            (
                duration(median_ns - empty),
                duration(own),
                format!("≤ {}: {met}", duration(CALL_COST_TARGET_NS)),
            )
        } else {
            ("—".to_owned(), "—".to_owned(), "—".to_owned())
        };
        out.push_str(&format!(
            "| call/{name} | {description} | {} | {beyond} | {own} | {verdict} |\n",
            duration(*median_ns)
        ));
    }
    out
}

/// Runs `cargo bench -p PACKAGE --bench BENCH` (`--quick` for a short run), unless
/// `report_only`: the command as text, and when it started (results older than that are stale;
/// the epoch when only reporting).
fn run_criterion(
    package: &str,
    bench: &str,
    quick: bool,
    report_only: bool,
) -> Result<(String, SystemTime)> {
    let mut what = format!("cargo bench -p {package} --bench {bench}");
    if quick {
        what.push_str(" -- --quick");
    }
    if report_only {
        return Ok((what, SystemTime::UNIX_EPOCH));
    }
    let started = SystemTime::now();
    let mut command = cargo();
    command.args(["bench", "-p", package, "--bench", bench]);
    if quick {
        command.args(["--", "--quick"]);
    }
    eprintln!("==> {what}");
    run_command(&what, &mut command)?;
    Ok((what, started))
}

/// The median in criterion's `estimates` file, in nanoseconds, if the file was written since
/// `started`.
fn fresh_median(estimates: &Path, started: SystemTime) -> Result<Option<f64>> {
    let fresh = fs::metadata(estimates)
        .and_then(|m| m.modified())
        .is_ok_and(|modified| modified >= started);
    if !fresh {
        return Ok(None);
    }
    let text = fs::read_to_string(estimates)
        .with_context(|| format!("failed to read {}", estimates.display()))?;
    median(&text)
        .map(Some)
        .with_context(|| format!("no median in {}", estimates.display()))
}

/// Prints `table` and writes it, with how it was made (`what`, or `cargo xtask bench` when only
/// reporting), between `begin` and `end` in BENCHMARKS.md, under `heading` when the markers are
/// missing.
fn write_section(
    (begin, end, heading): (&str, &str, &str),
    what: &str,
    report_only: bool,
    table: &str,
) -> Result<()> {
    println!("{table}");
    let command = if report_only {
        "cargo xtask bench"
    } else {
        what
    };
    let section = format!("{begin}\n\n{}\n{table}\n{end}", context(command));
    let path = project_root().join("BENCHMARKS.md");
    let old = fs::read_to_string(&path).unwrap_or_default();
    fs::write(&path, replace_marked(&old, &section, begin, end, heading))
        .with_context(|| format!("failed to write {}", path.display()))?;
    eprintln!("==> wrote {}", path.display());
    Ok(())
}

/// Runs the server harness (`bench/`, `qgate-bench`) after the codec benchmarks: qgate against
/// its floor and its peers over loopback, then latency during hot-swaps. It writes
/// `target/bench/results.json` and `target/bench/swap.json`; a full run also rewrites
/// BENCHMARKS.md's harness and swap sections, a `--quick` run leaves BENCHMARKS.md alone.
fn harness(quick: bool) -> Result<()> {
    let mut args = vec!["run", "--release", "-p", "qgate-bench", "--"];
    if quick {
        args.push("--quick");
    } else {
        args.extend(["--markdown", "BENCHMARKS.md"]);
    }
    let what = format!("cargo {}", args.join(" "));
    eprintln!("==> {what}");
    let mut command = cargo();
    // The command the harness's report names.
    let label = if quick {
        "cargo xtask bench --quick"
    } else {
        "cargo xtask bench"
    };
    command.args(&args).env("QGATE_BENCH_COMMAND", label);
    run_command(&what, &mut command)?;

    // Latency during hot-swaps against steady state: a full run rewrites BENCHMARKS.md's swap
    // section, a quick one runs three rounds and leaves it alone.
    let mut args = vec!["run", "--release", "-p", "qgate-bench", "--", "swap"];
    if quick {
        args.extend(["--rounds", "3"]);
    } else {
        args.extend(["--markdown", "BENCHMARKS.md"]);
    }
    let what = format!("cargo {}", args.join(" "));
    eprintln!("==> {what}");
    let mut command = cargo();
    command.args(&args).env("QGATE_BENCH_COMMAND", label);
    run_command(&what, &mut command)?;

    // An HTTPS GET through qgate to a plugin, against HAProxy terminating TLS in front of a
    // minimal HTTP server: a full run rewrites BENCHMARKS.md's HTTPS section.
    let mut args = vec!["run", "--release", "-p", "qgate-bench", "--", "https"];
    if quick {
        args.extend(["--reps", "3"]);
    } else {
        args.extend(["--markdown", "BENCHMARKS.md"]);
    }
    let what = format!("cargo {}", args.join(" "));
    eprintln!("==> {what}");
    let mut command = cargo();
    command.args(&args).env("QGATE_BENCH_COMMAND", label);
    run_command(&what, &mut command)?;

    // A WebSocket message through qgate to a plugin, against a q IPC round trip to the same
    // qgate and plugin: a full run rewrites BENCHMARKS.md's WebSocket section.
    let mut args = vec!["run", "--release", "-p", "qgate-bench", "--", "ws"];
    if quick {
        args.extend(["--reps", "3"]);
    } else {
        args.extend(["--markdown", "BENCHMARKS.md"]);
    }
    let what = format!("cargo {}", args.join(" "));
    eprintln!("==> {what}");
    let mut command = cargo();
    command.args(&args).env("QGATE_BENCH_COMMAND", label);
    run_command(&what, &mut command)
}

/// Cargo's target directory: `CARGO_TARGET_DIR` if set, else `target/` at the root.
fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| project_root().join("target"), PathBuf::from)
}

/// One benchmark's result.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Measure {
    /// The median time of one iteration, in nanoseconds.
    median_ns: f64,
    /// The bytes one iteration processes, when the benchmark declares a throughput.
    bytes: Option<u64>,
}

/// `(group, value) -> codec -> measure`, for the results written at or after `since`.
type Results = BTreeMap<(String, String), BTreeMap<String, Measure>>;

/// Reads every `<group>/<codec>/<value>/new/estimates.json` under `criterion`.
fn read_results(criterion: &Path, since: SystemTime) -> Result<Results> {
    let mut results = Results::new();
    for group in subdirectories(criterion)? {
        for codec in subdirectories(&group)? {
            for value in subdirectories(&codec)? {
                let new = value.join("new");
                let estimates = new.join("estimates.json");
                let Ok(metadata) = fs::metadata(&estimates) else {
                    continue;
                };
                if metadata.modified().is_ok_and(|modified| modified < since) {
                    continue;
                }
                let text = fs::read_to_string(&estimates)
                    .with_context(|| format!("failed to read {}", estimates.display()))?;
                let median_ns = median(&text)
                    .with_context(|| format!("no median in {}", estimates.display()))?;
                let bytes = fs::read_to_string(new.join("benchmark.json"))
                    .ok()
                    .and_then(|text| throughput_bytes(&text));
                results
                    .entry((file_name(&group), file_name(&value)))
                    .or_default()
                    .insert(file_name(&codec), Measure { median_ns, bytes });
            }
        }
    }
    Ok(results)
}

fn subdirectories(dir: &Path) -> Result<Vec<PathBuf>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("failed to list {}", dir.display()))?
            .path();
        // criterion's own `report` directories hold HTML, not results.
        if path.is_dir() && path.file_name().is_some_and(|name| name != "report") {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The number after `"key":` in `text`, from `from` on.
fn number_after(text: &str, key: &str) -> Option<f64> {
    let start = text.find(key)? + key.len();
    let rest = text[start..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The median's point estimate in criterion's `estimates.json`:
/// `"median":{"confidence_interval":{...},"point_estimate":X,...}`.
fn median(estimates: &str) -> Option<f64> {
    let start = estimates.find("\"median\":")?;
    number_after(&estimates[start..], "\"point_estimate\":")
}

/// The byte count in criterion's `benchmark.json`: `"throughput":{"Bytes":N}`.
fn throughput_bytes(benchmark: &str) -> Option<u64> {
    let start = benchmark.find("\"throughput\":")?;
    let n = number_after(&benchmark[start..], "\"Bytes\":")?;
    // Invariant: a byte count is a whole number well inside f64's exact range.
    Some(n as u64)
}

/// The comparison table, in markdown.
fn table(results: &Results) -> String {
    let mut keys: Vec<&(String, String)> = results.keys().collect();
    let rank = |group: &str| {
        GROUP_ORDER
            .iter()
            .position(|g| *g == group)
            .unwrap_or(GROUP_ORDER.len())
    };
    keys.sort_by(|a, b| rank(&a.0).cmp(&rank(&b.0)).then_with(|| a.cmp(b)));

    let mut out = String::from(
        "| benchmark | message | qgate | qgate throughput | kdbplus | kdbplus throughput \
         | ratio (kdbplus time / qgate time) | target ≥ 2× |\n\
         |---|--:|--:|--:|--:|--:|--:|---|\n",
    );
    for key in keys {
        let (group, value) = key;
        let codecs = &results[key];
        let Some(qgate) = codecs.get("qgate") else {
            continue;
        };
        let kdbplus = codecs.get("kdbplus");
        let ratio = kdbplus.map(|k| k.median_ns / qgate.median_ns);
        let has_target = TARGET_GROUPS.contains(&group.as_str());
        let verdict = match (ratio, has_target) {
            (Some(r), true) if r >= TARGET_RATIO => "met".to_owned(),
            (Some(_), true) => "**missed**".to_owned(),
            (None, true) => "not measurable: kdbplus's decoder is not public".to_owned(),
            (_, false) => "—".to_owned(),
        };
        out.push_str(&format!(
            "| {group}/{value} | {} | {} | {} | {} | {} | {} | {verdict} |\n",
            qgate.bytes.map_or_else(|| "—".to_owned(), size),
            duration(qgate.median_ns),
            throughput(qgate),
            kdbplus.map_or_else(|| "—".to_owned(), |k| duration(k.median_ns)),
            kdbplus.map_or_else(|| "—".to_owned(), throughput),
            ratio.map_or_else(|| "—".to_owned(), |r| format!("{r:.2}×")),
        ));
    }
    out
}

fn duration(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

fn size(bytes: u64) -> String {
    // Invariant: message sizes are far below 2^52, where f64 stops being exact.
    let b = bytes as f64;
    if b < 1024.0 {
        format!("{bytes} B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    }
}

fn throughput(measure: &Measure) -> String {
    let Some(bytes) = measure.bytes else {
        return "—".to_owned();
    };
    // Invariant: as in `size`.
    let per_second = bytes as f64 / (measure.median_ns / 1e9);
    if per_second >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB/s", per_second / (1024.0 * 1024.0 * 1024.0))
    } else {
        format!("{:.0} MiB/s", per_second / (1024.0 * 1024.0))
    }
}

/// The lines that say how the table was made: command, date, machine.
fn context(command: &str) -> String {
    let date = Command::new("date")
        .arg("-u")
        .output()
        .ok()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let rustc = Command::new("rustc")
        .arg("--version")
        .current_dir(project_root())
        .output()
        .ok()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let memory = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| field(&text, "MemTotal"))
        .and_then(|kb| kb.trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or_else(
            || "unknown".to_owned(),
            // Invariant: memory sizes are far below 2^52.
            |kb| format!("{:.1} GiB", kb as f64 / (1024.0 * 1024.0)),
        );
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| field(&text, "model name"))
        .unwrap_or_else(|| "unknown".to_owned());
    format!(
        "- command: `{command}`\n- date: {date}\n- machine: {cpus} CPUs ({cpu}), {memory} of \
         memory\n- toolchain: {rustc}\n"
    )
}

/// The value of the first `key : value` line of a `/proc` file.
fn field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name.trim() == key).then(|| value.trim().to_owned())
    })
}

/// `document` with the text between `begin` and `end` (markers included) replaced by `section`,
/// or with `heading` and `section` appended when the markers are missing.
fn replace_marked(document: &str, section: &str, begin: &str, end: &str, heading: &str) -> String {
    if let (Some(b), Some(e)) = (document.find(begin), document.find(end))
        && b < e
    {
        return format!("{}{section}{}", &document[..b], &document[e + end.len()..]);
    }
    let mut out = document.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(heading);
    out.push_str("\n\n");
    out.push_str(section);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_criterion_json() {
        let estimates = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":3.0},"point_estimate":2.0,"standard_error":0.1},"median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.5,"upper_bound":2.5},"point_estimate":1234.5e1,"standard_error":0.2}}"#;
        assert_eq!(median(estimates), Some(12345.0));
        let benchmark = r#"{"group_id":"decode","function_id":"qgate","value_str":"long_1m","throughput":{"Bytes":8000014},"full_id":"decode/qgate/long_1m"}"#;
        assert_eq!(throughput_bytes(benchmark), Some(8_000_014));
        assert_eq!(throughput_bytes(r#"{"throughput":null}"#), None);
    }

    #[test]
    fn replaces_the_section_between_the_markers() {
        let doc = format!("# B\n\nintro\n\n{BEGIN}\nold\n{END}\n\ntail\n");
        let new = replace_marked(
            &doc,
            &format!("{BEGIN}\nnew\n{END}"),
            BEGIN,
            END,
            "## Codec",
        );
        assert_eq!(
            new,
            format!("# B\n\nintro\n\n{BEGIN}\nnew\n{END}\n\ntail\n")
        );
        let appended = replace_marked(
            "# B\n",
            &format!("{BEGIN}\nx\n{END}"),
            BEGIN,
            END,
            "## Codec",
        );
        assert_eq!(appended, format!("# B\n\n## Codec\n\n{BEGIN}\nx\n{END}\n"));
    }

    #[test]
    fn parser_verdicts() {
        let table = parser_table(&[
            (
                "parse_and_facts",
                "parse plus facts",
                Some(2_000.0),
                1_500.0,
            ),
            ("parse", "parse", None, 900.0),
            ("slow", "slow", Some(2_000.0), 2_500.0),
        ]);
        let rows: Vec<&str> = table.lines().skip(2).collect();
        assert_eq!(
            rows[0],
            "| parse_and_facts/select_100 | parse plus facts | 1.50 µs | ≤ 2.00 µs: met |"
        );
        assert_eq!(rows[1], "| parse/select_100 | parse | 900.0 ns | — |");
        assert!(rows[2].ends_with("| ≤ 2.00 µs: **missed** |"), "{table}");
        let doc = format!("# B\n\n{PARSER_BEGIN}\nold\n{PARSER_END}\n");
        assert_eq!(
            replace_marked(&doc, "new", PARSER_BEGIN, PARSER_END, "## q parser"),
            "# B\n\nnew\n"
        );
    }

    #[test]
    fn chain_verdicts() {
        let met = chain_table(15_000.0, 17_400.0, 2_500.0);
        assert!(
            met.contains("measured in pairs of calls | 2.50 µs | ≤ 3.00 µs: met |"),
            "{met}"
        );
        let missed = chain_table(15_000.0, 19_000.0, 4_000.0);
        assert!(
            missed.contains("4.00 µs | ≤ 3.00 µs: **missed** |"),
            "{missed}"
        );
    }

    #[test]
    fn ratios_and_verdicts() {
        let mut results = Results::new();
        let measure = |median_ns, bytes| Measure {
            median_ns,
            bytes: Some(bytes),
        };
        let mut encode = BTreeMap::new();
        encode.insert("qgate".to_owned(), measure(1e6, 1 << 20));
        encode.insert("kdbplus".to_owned(), measure(3e6, 1 << 20));
        results.insert(("encode".to_owned(), "x".to_owned()), encode);
        let mut decode = BTreeMap::new();
        decode.insert("qgate".to_owned(), measure(1e6, 1 << 20));
        results.insert(("decode".to_owned(), "x".to_owned()), decode);
        let table = table(&results);
        let rows: Vec<&str> = table.lines().skip(2).collect();
        assert!(rows[0].starts_with("| decode/x |"), "{table}");
        assert!(rows[0].contains("not measurable"), "{table}");
        assert!(rows[1].contains("| 3.00× | met |"), "{table}");
        assert!(rows[1].contains("1000 MiB/s"), "{table}");
    }
}
