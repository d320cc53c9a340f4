//! Every vector of the conformance table (`testdata/ipc-vectors.tsv`, a copy of
//! `shared/conformance/ipc-vectors.tsv`): decoded, then re-encoded byte for byte; compressed
//! vectors are reproduced by our compressor and decompressed by our decompressor.

use std::path::Path;

use qgate_ipc::{
    Header, K, Limits, Message, ValueView, compress, decode, encode_message, validate,
};

struct Vector {
    id: String,
    value: String,
    bytes: Vec<u8>,
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length: {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digits"))
        .collect()
}

fn vectors() -> Vec<Vector> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/ipc-vectors.tsv");
    let text = std::fs::read_to_string(&path).expect("testdata/ipc-vectors.tsv is readable");
    let vectors: Vec<Vector> = text
        .lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            assert!(fields.len() >= 3, "short row: {line}");
            Vector {
                id: fields[0].to_owned(),
                value: fields[1].to_owned(),
                bytes: hex(fields[2]),
            }
        })
        .collect();
    assert!(
        vectors.len() >= 80,
        "the table has lost rows: {}",
        vectors.len()
    );
    vectors
}

#[test]
fn the_copy_matches_shared_when_shared_is_present() {
    let ours = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/ipc-vectors.tsv");
    // The repository is checked out next to `shared/` on the team's machines.
    let shared =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/ipc-vectors.tsv");
    if let Ok(upstream) = std::fs::read(&shared) {
        assert_eq!(
            std::fs::read(&ours).expect("our copy"),
            upstream,
            "shared/conformance/ipc-vectors.tsv changed: copy it to crates/ipc/testdata/"
        );
    }
}

#[test]
fn every_vector_decodes_and_reencodes_byte_for_byte() {
    let limits = Limits::default();
    for v in vectors() {
        let header = Header::parse(&v.bytes, &limits)
            .unwrap_or_else(|e| panic!("{}: header: {e}", v.id))
            .unwrap_or_else(|| panic!("{}: incomplete header", v.id));
        assert_eq!(header.len(), v.bytes.len(), "{}: length field", v.id);
        let message = Message::from_frame(v.bytes.clone(), &limits)
            .unwrap_or_else(|e| panic!("{} ({}): {e}", v.id, v.value));
        let value = decode(message.body(), header.endian)
            .unwrap_or_else(|e| panic!("{} ({}): {e}", v.id, v.value));
        validate(message.body(), header.endian).unwrap_or_else(|e| panic!("{}: {e}", v.id));
        ValueView::new(message.body(), header.endian).unwrap_or_else(|e| panic!("{}: {e}", v.id));
        let again = encode_message(header.message_type, &value)
            .unwrap_or_else(|e| panic!("{} ({}): {e}", v.id, v.value));
        assert_eq!(
            again,
            message.as_bytes(),
            "{} ({}) does not re-encode to the same bytes",
            v.id,
            v.value
        );
        if header.compressed {
            assert_eq!(
                compress(message.as_bytes()).as_deref(),
                Some(&v.bytes[..]),
                "{}: our compressor does not reproduce q's bytes",
                v.id
            );
        }
    }
}

#[test]
fn values_are_what_the_table_says() {
    use qgate_ipc::{Atom, VectorData};
    let by_id = |id: &str| -> K {
        let v = vectors()
            .into_iter()
            .find(|v| v.id == id)
            .expect("row exists");
        let message = Message::from_frame(v.bytes, &Limits::default()).expect("valid frame");
        decode(message.body(), message.header.endian).expect("valid body")
    };
    assert_eq!(by_id("K1"), K::Atom(Atom::Int(1)));
    assert_eq!(
        by_id("Q7"),
        K::vector(VectorData::Long(vec![1, i64::MIN, 3]))
    );
    assert_eq!(by_id("G5"), K::symbol("GOOG"));
    assert_eq!(
        by_id("G7"),
        K::Atom(Atom::Timestamp(570_246_540_884_361_000))
    );
    assert_eq!(by_id("Q45"), K::Null);
    assert_eq!(by_id("G17"), K::error("type"));
    assert_eq!(
        by_id("C1"),
        K::vector(VectorData::Boolean(vec![true; 2000]))
    );
    assert_eq!(by_id("C6"), K::symbols(std::iter::repeat_n("q", 1000)));
    let K::Dict(d) = by_id("K6") else {
        panic!("K6 is a dictionary")
    };
    assert!(d.sorted);
}

#[test]
fn random_bytes_do_not_compress() {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut body = vec![4u8, 0];
    body.extend_from_slice(&3000i32.to_le_bytes());
    for _ in 0..3000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        body.push(state as u8);
    }
    let value = decode(&body, qgate_ipc::Endian::Little).expect("a byte vector");
    let message = encode_message(qgate_ipc::MessageType::Async, &value).expect("encodes");
    assert_eq!(compress(&message), None);
}
