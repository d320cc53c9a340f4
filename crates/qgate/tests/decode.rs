//! Runs the `qgate decode` binary over every conformance vector and over bad input.
//!
//! The vectors are `crates/ipc/testdata/ipc-vectors.tsv`, the codec's copy of
//! `shared/conformance/ipc-vectors.tsv` (the codec's conformance test keeps the two equal).

use std::{
    io::Write as _,
    path::PathBuf,
    process::{Command, Output, Stdio},
};

/// `1i` as a whole message (KX's serialization examples).
const ONE_I: &str = "010000000d000000fa01000000";

/// One row of the conformance table.
struct Vector {
    id: String,
    value: String,
    hex: String,
}

fn vectors() -> Vec<Vector> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ipc/testdata/ipc-vectors.tsv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "cannot read the conformance vectors at {}: {error}",
            path.display()
        )
    });
    let vectors: Vec<Vector> = text
        .lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            assert!(fields.len() >= 3, "row with fewer than 3 columns: {line:?}");
            Vector {
                id: fields[0].to_owned(),
                value: fields[1].to_owned(),
                hex: fields[2].trim().to_owned(),
            }
        })
        .collect();
    assert!(!vectors.is_empty(), "no vectors in {}", path.display());
    vectors
}

fn from_hex(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd hex length: {hex}");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digits"))
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn qgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qgate"))
}

fn run(args: &[&str]) -> Output {
    qgate().args(args).output().expect("qgate runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The value of the `name: value` line of a report.
fn field<'a>(report: &'a str, name: &str) -> Option<&'a str> {
    report
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
}

/// Asserts that qgate failed with status 1 and one `error: ` line containing `expect`.
#[track_caller]
fn assert_error(output: &Output, expect: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(1), "stderr: {err}");
    assert!(
        output.stdout.is_empty(),
        "stdout on error: {}",
        stdout(output)
    );
    assert!(err.starts_with("error: "), "stderr: {err:?}");
    assert_eq!(err.lines().count(), 1, "not a one-liner: {err:?}");
    assert!(err.contains(expect), "{err:?} lacks {expect:?}");
}

#[test]
fn every_vector_decodes_and_reencodes() {
    let mut failures = Vec::new();
    for vector in vectors() {
        let bytes = from_hex(&vector.hex);
        // A compressed frame re-encodes to the message it decompresses to.
        let expect = if bytes.get(2) == Some(&1) {
            match qgate_ipc::decompress(&bytes, usize::MAX) {
                Ok(message) => to_hex(&message),
                Err(error) => {
                    failures.push(format!(
                        "{}: the vector does not decompress: {error}",
                        vector.id
                    ));
                    continue;
                }
            }
        } else {
            vector.hex.clone()
        };
        let output = run(&["decode", "--hex", &vector.hex, "--reencode"]);
        let report = stdout(&output);
        if !output.status.success() {
            failures.push(format!(
                "{} ({}): failed: {}",
                vector.id,
                vector.value,
                stderr(&output)
            ));
            continue;
        }
        if field(&report, "value").is_none() {
            failures.push(format!("{}: no value line in {report:?}", vector.id));
        }
        match field(&report, "reencoded") {
            Some(reencoded) if reencoded == expect => {}
            Some(reencoded) => failures.push(format!(
                "{} ({}): re-encoded\n    {reencoded}\n  expected\n    {expect}",
                vector.id, vector.value
            )),
            None => failures.push(format!("{}: no reencoded line in {report:?}", vector.id)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} vectors failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn values_print_in_q_syntax() {
    let expected = [
        ("K1", "1i"),
        ("K2", ",1i"),
        ("K3", "0x0001020304"),
        ("K4", ",0x0001020304"),
        ("K5", "`a`b!2 3i"),
        ("K6", "`s#`a`b!2 3i"),
        ("K8", "+`a`b!(,2i;,3i)"),
        ("K9", "`s#+`a`b!(`p#,2i;,3i)"),
        ("K12", "{x+y}"),
        ("K13", "{x+y}"),
        ("G2", "01b"),
        ("G7", "2018.01.26D01:49:00.884361000"),
        ("G9", "`abc`bc`c"),
        ("G10", "(\"ac\";`b;`)"),
        ("G11", "2013.06 2013.07 2013.08m"),
        ("G12", "00:00 21:22"),
        ("G14", ",21:53:37.963"),
        ("G15", ",2013.06.10"),
        ("G17", "'type"),
        ("Q2", "-234h"),
        ("Q5", "3.234"),
        ("Q6", "5.5e"),
        ("Q7", "1 0N 3"),
        ("Q10", "\"\""),
        ("Q11", "`"),
        ("Q13", "2001.01m"),
        ("Q14", "2001.01.01"),
        ("Q16", "0D05:36:57.600000000"),
        ("Q17", "12:01"),
        ("Q18", "12:05:00"),
        ("Q19", "12:04:59.123"),
        ("Q23", "0Ne"),
        ("Q24", "0n"),
        ("Q29", "0Nz"),
        ("Q32", "0Ng"),
        ("Q33", "()"),
        ("Q35", "1 0N 3h"),
        ("Q39", "(42;::;`foo)"),
        ("Q40", "(1;2h;3.234;\"4\")"),
        ("Q43", "(\"one\";\"two\";\"3\")"),
        ("Q45", "::"),
        ("Q46", "{x+y}[3]"),
        ("Q48", "~:"),
        ("Q49", "&"),
        ("Q52a", ",/"),
        ("Q52b", "+\\"),
        ("Q52c", ":':"),
        ("Q53", "(,`a)!,1"),
        ("Q55", "`x`y!(`a;2)"),
        ("Q57", "+`name`iq!(`symbol$();`int$())"),
        ("Q59", "8c680a01-5a49-5aab-5a65-d4bfddb6a661"),
        ("R5", "+(,`a)!`:test/"),
        ("C4", &"`a".repeat(1000)),
    ];
    let vectors = vectors();
    let mut failures = Vec::new();
    for (id, expect) in expected {
        let vector = vectors
            .iter()
            .find(|v| v.id == id)
            .unwrap_or_else(|| panic!("vector {id} is not in the table"));
        let output = run(&["decode", "--hex", &vector.hex]);
        let report = stdout(&output);
        let value = field(&report, "value");
        if value != Some(expect) {
            failures.push(format!(
                "{id} ({}): printed {value:?}, expected {expect:?}; stderr: {}",
                vector.value,
                stderr(&output)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn prints_the_header() {
    let output = run(&[
        "decode",
        "--hex",
        "01010000 0d000000\nfa01000000",
        "--reencode",
    ]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "endian: little\ntype: sync\ncompressed: no\nlength: 13\nvalue: 1i\n\
         reencoded: 010100000d000000fa01000000\n"
    );
}

#[test]
fn prints_a_compressed_header() {
    let c1 = "0100010026000000de070000000100d00700000101ff00ff00ff00ff00ff00ff00ff00ff00c5";
    let output = run(&["decode", "--hex", c1]);
    let report = stdout(&output);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert_eq!(field(&report, "type"), Some("async"));
    assert_eq!(
        field(&report, "compressed"),
        Some("yes (38 bytes on the wire, 2014 uncompressed)")
    );
    assert_eq!(field(&report, "length"), Some("38"));
    assert_eq!(
        field(&report, "value"),
        Some(format!("{}b", "1".repeat(2000)).as_str())
    );
}

#[test]
fn big_endian_reencodes_little_endian() {
    let output = run(&[
        "decode",
        "--hex",
        "000000000000000dfa00000001",
        "--reencode",
    ]);
    let report = stdout(&output);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert_eq!(field(&report, "endian"), Some("big"));
    assert_eq!(field(&report, "value"), Some("1i"));
    assert_eq!(field(&report, "reencoded"), Some(ONE_I));
}

#[test]
fn reads_raw_bytes_from_stdin() {
    let mut child = qgate()
        .arg("decode")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qgate starts");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(&from_hex(ONE_I))
        .expect("write to qgate");
    let output = child.wait_with_output().expect("qgate finishes");
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert_eq!(field(&stdout(&output), "value"), Some("1i"));
}

#[test]
fn reads_raw_bytes_from_a_file() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("qgate-decode-one-i.bin");
    std::fs::write(&path, from_hex(ONE_I)).expect("write the capture");
    let output = run(&["decode", path.to_str().expect("UTF-8 path"), "--reencode"]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert_eq!(field(&stdout(&output), "value"), Some("1i"));
    assert_eq!(field(&stdout(&output), "reencoded"), Some(ONE_I));
}

#[test]
fn bad_hex_is_an_error() {
    assert_error(
        &run(&["decode", "--hex", "010"]),
        "not hex: odd number of digits",
    );
    assert_error(&run(&["decode", "--hex", "01zz"]), "not hex: 'z'");
}

#[test]
fn a_truncated_frame_is_an_error() {
    let cut = &ONE_I[..ONE_I.len() - 2];
    assert_error(
        &run(&["decode", "--hex", cut]),
        "frame is 12 bytes but its header says 13: the capture is cut short",
    );
    assert_error(
        &run(&["decode", "--hex", "01000000"]),
        "shorter than the 8-byte header",
    );
}

#[test]
fn trailing_bytes_are_an_error() {
    let long = format!("{ONE_I}00");
    assert_error(
        &run(&["decode", "--hex", &long]),
        "trailing bytes after the frame",
    );
}

#[test]
fn a_missing_file_is_an_error() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("qgate-decode-no-such-file");
    let path = path.to_str().expect("UTF-8 path");
    assert_error(&run(&["decode", path]), path);
}

#[test]
fn a_bad_body_is_an_error() {
    // Type 3 does not exist.
    assert_error(
        &run(&["decode", "--hex", "010000000a00000003ff"]),
        "the body is not a well-formed q value",
    );
}
