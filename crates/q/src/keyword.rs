//! q's keywords: the names of the `.q` namespace and the reserved words of `.Q.res`.
//!
//! In a parse tree a keyword appears by value, not as a symbol (q-parse.md §6): a k unary form
//! (`count` is `#:`), a k lambda (`each` is `k){x'y}`), or its own name for the ones defined in C
//! (`like`, `max`).
//! [`Keyword`] keeps the name, since the value is not one-to-one (`not` and `hdel` are both
//! `~:`), and [`Keyword::display`] gives the value as q 4.x prints it.
//! Where KX's documentation shows the value, the table uses it; the k definitions it does not show
//! print by name, which the conformance file never compares.

use std::fmt;

/// A q keyword, by name.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Keyword(u8);

/// One keyword: its name, how `parse` prints its value, and whether it is used infix.
struct Entry {
    name: &'static str,
    display: &'static str,
    infix: bool,
}

const fn kw(name: &'static str, display: &'static str, infix: bool) -> Entry {
    Entry {
        name,
        display,
        infix,
    }
}

/// Every keyword, sorted by name (a test checks the order, which keeps the list readable).
///
/// The second column is the value `parse` shows: unary forms and k lambdas from q-parse.md §6
/// and the conformance file, the name itself for the rest.
/// The third says whether the keyword takes its left argument infix, like an operator (`x in y`,
/// `f each x`); the others are applied prefix or with brackets.
const TABLE: &[Entry] = &[
    kw("abs", "abs", false),
    kw("acos", "acos", false),
    kw("aj", "aj", false),
    kw("aj0", "aj0", false),
    kw("ajf", "ajf", false),
    kw("ajf0", "ajf0", false),
    kw("all", "all", false),
    kw("and", "and", true),
    kw("any", "any", false),
    kw("asc", "asc", false),
    kw("asin", "asin", false),
    kw("asof", "asof", true),
    kw("atan", "atan", false),
    kw("attr", "attr", false),
    kw("avg", "avg", false),
    kw("avgs", "avgs", false),
    kw("bin", "bin", true),
    kw("binr", "binr", true),
    kw("ceiling", "ceiling", false),
    kw("cols", "cols", false),
    kw("cor", "cor", true),
    kw("cos", "cos", false),
    kw("count", "#:", false),
    kw("cov", "cov", true),
    kw("cross", "cross", true),
    kw("csv", "csv", false),
    kw("cut", "cut", true),
    kw("deltas", "deltas", false),
    kw("desc", "desc", false),
    kw("dev", "k){sqrt var x}", false),
    kw("differ", "differ", false),
    kw("distinct", "?:", false),
    kw("div", "div", true),
    kw("do", "do", false),
    kw("dsave", "dsave", true),
    kw("each", "k){x'y}", true),
    kw("ej", "ej", false),
    kw("ema", "ema", true),
    kw("enlist", "enlist", false),
    kw("eval", "eval", false),
    kw("except", "except", true),
    kw("exit", "exit", false),
    kw("exp", "exp", false),
    kw("fby", "k){@[(#y)#x[0]0#x 1;g;:;x[0]'x[1]g:.=y]}", true),
    kw("fills", "fills", false),
    kw("first", "*:", false),
    kw("fkeys", "fkeys", false),
    kw("flip", "+:", false),
    kw("floor", "_:", false),
    kw("get", ".:", false),
    kw("getenv", "getenv", false),
    kw("group", "=:", false),
    kw("gtime", "gtime", false),
    kw("hclose", ">:", false),
    kw("hcount", "hcount", false),
    kw("hdel", "~:", false),
    kw("hopen", "hopen", false),
    kw("hsym", "hsym", false),
    kw("iasc", "k){$[0h>@x;'`rank;<x]}", false),
    kw("idesc", "idesc", false),
    kw("if", "if", false),
    kw("ij", "ij", true),
    kw("ijf", "ijf", true),
    kw("in", "in", true),
    kw("insert", "insert", true),
    kw("inter", "inter", true),
    kw("inv", "inv", false),
    kw("key", "!:", false),
    kw("keys", "keys", false),
    kw("last", "last", false),
    kw("like", "like", true),
    kw("lj", "k){.Q.ft[,\\:[;y];x]}", true),
    kw("ljf", "ljf", true),
    kw("load", "load", false),
    kw("log", "log", false),
    kw("lower", "lower", false),
    kw("lsq", "lsq", true),
    kw("ltime", "%:", false),
    kw("ltrim", "ltrim", false),
    kw("mavg", "mavg", true),
    kw("max", "max", false),
    kw("maxs", "maxs", false),
    kw("mcount", "mcount", true),
    kw("md5", "md5", false),
    kw("mdev", "mdev", true),
    kw("med", "med", false),
    kw("meta", "meta", false),
    kw("min", "min", false),
    kw("mins", "mins", false),
    kw("mmax", "mmax", true),
    kw("mmin", "mmin", true),
    kw("mmu", "mmu", true),
    kw("mod", "mod", true),
    kw("msum", "msum", true),
    kw("neg", "-:", false),
    kw("next", "next", false),
    kw("not", "~:", false),
    kw("null", "^:", false),
    kw("or", "or", true),
    kw("over", "k){x/y}", true),
    kw("parse", "parse", false),
    kw("peach", "peach", true),
    kw("pj", "pj", true),
    kw("prd", "prd", false),
    kw("prds", "prds", false),
    kw("prev", "prev", false),
    kw("prior", "k){x':y}", true),
    kw("rand", "rand", false),
    kw("rank", "rank", false),
    kw("ratios", "ratios", false),
    kw("raze", "raze", false),
    kw("read0", "0::", false),
    kw("read1", "1::", false),
    kw("reciprocal", "%:", false),
    kw("reval", "reval", false),
    kw("reverse", "|:", false),
    kw("rload", "rload", false),
    kw("rotate", "rotate", true),
    kw("rsave", "rsave", false),
    kw("rtrim", "rtrim", false),
    kw("save", "save", false),
    kw("scan", "k){x\\y}", true),
    kw("scov", "scov", true),
    kw("sdev", "sdev", false),
    kw("set", "set", true),
    kw("setenv", "setenv", true),
    kw("show", "show", false),
    kw("signum", "signum", false),
    kw("sin", "sin", false),
    kw("sqrt", "sqrt", false),
    kw("ss", "ss", true),
    kw("ssr", "ssr", false),
    kw("string", "$:", false),
    kw("sublist", "sublist", true),
    kw("sum", "sum", false),
    kw("sums", "sums", false),
    kw("sv", "sv", true),
    kw("svar", "svar", false),
    kw("system", "system", false),
    kw("tables", "tables", false),
    kw("tan", "tan", false),
    kw("til", "k){$[0>@x;!x;'`type]}", false),
    kw("trim", "trim", false),
    kw("type", "@:", false),
    kw("uj", "uj", true),
    kw("ujf", "ujf", true),
    kw("ungroup", "ungroup", false),
    kw("union", "union", true),
    kw("upper", "upper", false),
    kw("upsert", "upsert", true),
    kw("value", ".:", false),
    kw("var", "var", false),
    kw("view", "view", false),
    kw("views", "views", false),
    kw("vs", "vs", true),
    kw("wavg", "wavg", true),
    kw("where", "&:", false),
    kw("while", "while", false),
    kw("within", "within", true),
    kw("wj", "wj", false),
    kw("wj1", "wj1", false),
    kw("wsum", "wsum", true),
    kw("xasc", "xasc", true),
    kw("xbar", "k){x*y div x:$[16h=abs[@x];\"j\"$x;x]}", true),
    kw("xcol", "xcol", true),
    kw("xcols", "xcols", true),
    kw("xdesc", "xdesc", true),
    kw("xexp", "xexp", true),
    kw("xgroup", "xgroup", true),
    kw("xkey", "xkey", true),
    kw("xlog", "xlog", true),
    kw("xprev", "xprev", true),
    kw("xrank", "xrank", true),
];

/// The number of keywords.
const COUNT: usize = TABLE.len();

/// The longest keyword, in bytes (`reciprocal`).
const MAX_LEN: usize = 10;

/// A name of at most 16 bytes as one integer, its bytes little-endian and zero-padded, so that
/// comparing two names is comparing two integers.
///
/// A name the lexer reads holds no zero byte, so two of different lengths never pack to the
/// same integer; [`Keyword::lookup`] refuses other bytes before packing.
pub(crate) const fn pack(name: &[u8]) -> u128 {
    // Two 64-bit halves: shifting a u128 by a variable amount costs several instructions.
    let (mut low, mut high) = (0u64, 0u64);
    let mut i = 0;
    while i < name.len() && i < 8 {
        low |= (name[i] as u64) << (8 * i);
        i += 1;
    }
    while i < name.len() && i < 16 {
        high |= (name[i] as u64) << (8 * (i - 8));
        i += 1;
    }
    (low as u128) | ((high as u128) << 64)
}

/// The slots of the lookup table: a power of two, about three times the number of keywords, so
/// that a probe rarely looks past its first slot.
const SLOTS: usize = 512;

/// The slot where probing for `key` starts.
const fn home(key: u128) -> usize {
    let folded = (key as u64) ^ ((key >> 64) as u64);
    // Fibonacci hashing: the top bits of the product mix every byte of the name.
    (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOTS.trailing_zeros())) as usize
}

/// Every keyword's name, packed.
const KEYS: [u128; COUNT] = {
    let mut keys = [0u128; COUNT];
    let mut i = 0;
    while i < COUNT {
        let name = TABLE[i].name.as_bytes();
        assert!(name.len() <= MAX_LEN, "a keyword longer than MAX_LEN");
        keys[i] = pack(name);
        i += 1;
    }
    keys
};

/// An open-addressing table from a packed name's [`home`] slot to its index in [`TABLE`] plus
/// one (0 for an empty slot), built at compile time.
const INDEX: [u8; SLOTS] = {
    assert!(COUNT < 255, "keyword indices must fit a byte");
    let mut index = [0u8; SLOTS];
    let mut i = 0;
    while i < COUNT {
        let mut slot = home(KEYS[i]);
        while index[slot] != 0 {
            slot = (slot + 1) % SLOTS;
        }
        index[slot] = (i + 1) as u8;
        i += 1;
    }
    index
};

impl Keyword {
    /// The keyword called `name`, if there is one.
    pub fn lookup(name: &[u8]) -> Option<Keyword> {
        // Every keyword is 2 to 10 lowercase ASCII letters and digits starting with a letter,
        // which many names (`trade`, `.z.pg`, `Price`) are not. Checking every byte also keeps
        // out a zero byte, which packs as padding would (a call list's symbol may hold one).
        let first = *name.first()?;
        if !(2..=MAX_LEN).contains(&name.len())
            || !first.is_ascii_lowercase()
            || !name
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return None;
        }
        Keyword::lookup_packed(pack(name))
    }

    /// The keyword whose name packs to `key` (see [`pack`]).
    pub(crate) fn lookup_packed(key: u128) -> Option<Keyword> {
        let mut slot = home(key);
        loop {
            let entry = INDEX[slot];
            if entry == 0 {
                return None;
            }
            let i = usize::from(entry - 1);
            if KEYS[i] == key {
                // Invariant: the table has fewer than 255 entries (checked where INDEX is built).
                return Some(Keyword(i as u8));
            }
            slot = (slot + 1) % SLOTS;
        }
    }

    /// The keyword called `name`, at compile time: a name not in the table fails the build.
    pub(crate) const fn named(name: &str) -> Keyword {
        let key = pack(name.as_bytes());
        let mut i = 0;
        while i < COUNT {
            if KEYS[i] == key {
                return Keyword(i as u8);
            }
            i += 1;
        }
        panic!("not a keyword")
    }

    fn entry(self) -> &'static Entry {
        &TABLE[usize::from(self.0)]
    }

    /// The keyword's name: `count`, `lj`.
    pub fn name(self) -> &'static str {
        self.entry().name
    }

    /// The value `parse` shows for the keyword: `#:`, `k){x'y}`, `like`.
    pub fn display(self) -> &'static str {
        self.entry().display
    }

    /// Whether the keyword takes a left argument infix (`x in y`).
    pub fn is_infix(self) -> bool {
        self.entry().infix
    }

    /// Whether the keyword is a control word (`if`, `do`, `while`), which is not a function.
    pub fn is_control(self) -> bool {
        matches!(self, kw::IF | kw::DO | kw::WHILE)
    }
}

/// The keywords the parser and the facts name, as constants to match on.
pub(crate) mod kw {
    use super::Keyword;

    macro_rules! keywords {
        ($($constant:ident = $name:literal,)*) => {
            $(pub(crate) const $constant: Keyword = Keyword::named($name);)*
        };
    }

    keywords! {
        AJ = "aj", AJ0 = "aj0", AJF = "ajf", AJF0 = "ajf0", DO = "do", DSAVE = "dsave",
        EACH = "each", EJ = "ej", ENLIST = "enlist", EVAL = "eval", EXIT = "exit", FBY = "fby",
        FLIP = "flip", GET = "get", HCLOSE = "hclose", HCOUNT = "hcount", HDEL = "hdel",
        HOPEN = "hopen", IF = "if", IJ = "ij", IJF = "ijf", INSERT = "insert", KEY = "key",
        LJ = "lj", LJF = "ljf", LOAD = "load", NEG = "neg", OVER = "over", PEACH = "peach",
        PJ = "pj", PRIOR = "prior", READ0 = "read0", READ1 = "read1", REVAL = "reval",
        RLOAD = "rload", RSAVE = "rsave", SAVE = "save", SCAN = "scan", SET = "set",
        SETENV = "setenv", SYSTEM = "system", UJ = "uj", UJF = "ujf", UPSERT = "upsert",
        VALUE = "value", WHILE = "while", WJ = "wj", WJ1 = "wj1",
    }
}

impl fmt::Debug for Keyword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keyword({})", self.name())
    }
}

impl fmt::Display for Keyword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted() {
        for pair in TABLE.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} >= {}",
                pair[0].name,
                pair[1].name
            );
        }
    }

    #[test]
    fn lookup() {
        let check = |name: &str, display: Option<&str>| {
            assert_eq!(
                Keyword::lookup(name.as_bytes()).map(Keyword::display),
                display,
                "{name}"
            );
        };
        check("count", Some("#:"));
        check("each", Some("k){x'y}"));
        check("like", Some("like"));
        check("xrank", Some("xrank"));
        check("abs", Some("abs"));
        check("trade", None);
        check("", None);
        check("zzz", None);
        check("Count", None);
        check("in\0", None);
        check("count\0\0", None);
        check(".q.count", None);
        for entry in TABLE {
            check(entry.name, Some(entry.display));
        }
        assert!(Keyword::lookup(b"in").is_some_and(Keyword::is_infix));
        assert!(!Keyword::lookup(b"count").is_some_and(Keyword::is_infix));
        assert!(Keyword::lookup(b"while").is_some_and(Keyword::is_control));
    }
}
