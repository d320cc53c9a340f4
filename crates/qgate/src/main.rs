//! The `qgate` binary.

fn main() {}
