//! Fuzz target `q_parse`: arbitrary bytes as q text, through everything a policy does with a
//! free-text query.
//!
//! The text is parsed with error recovery, printed as q would print it, shaped, and analysed for
//! facts; a text that parses must give facts without `unparsed`, a text that does not must give
//! exactly `unparsed`, and every error's position must lie inside the text.
//! A tree that parses is printed in its one-line form and that is parsed again, which must not
//! panic either (it is rarely q, and need not parse).

#![no_main]

use libfuzzer_sys::fuzz_target;
use qgate_q::{Facts, Flags, parse_all, shape};

fuzz_target!(|data: &[u8]| {
    let (tree, errors) = parse_all(data);
    let printed = tree.to_string();
    let _ = shape(&tree);
    let facts = Facts::of_text(data);
    if errors.is_empty() {
        assert_eq!(facts, Facts::of_tree(&tree), "of_text and of_tree disagree");
        assert!(
            !facts.flags.contains(Flags::UNPARSED) || facts.flags == Flags::UNPARSED,
            "unparsed mixed with other facts"
        );
        let _ = parse_all(tree.root().one_line().as_bytes());
        let _ = parse_all(printed.as_bytes());
    } else {
        assert_eq!(facts, Facts::unparsed(), "a broken text gave facts");
        for error in &errors {
            assert!(error.offset <= data.len(), "an error past the end");
            let _ = (error.q_console(data), error.q_trap(data), error.to_string());
        }
    }
});
