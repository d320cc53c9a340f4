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

/// Every keyword, sorted by name (a test checks the order, since lookup is a binary search).
///
/// The second column is the value `parse` shows: unary forms and k lambdas from q-parse.md §6
/// and the conformance file, the name itself for the rest.
/// The third says whether the keyword takes its left argument infix, like an operator (`x in y`,
/// `f each x`); the others are applied prefix or with brackets.
static TABLE: &[Entry] = &[
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

impl Keyword {
    /// The keyword called `name`, if there is one.
    pub fn lookup(name: &[u8]) -> Option<Keyword> {
        // Every keyword is 2 to 10 lowercase ASCII letters and digits starting with a letter,
        // which most names (`trade`, `.z.pg`, `Price`) are not; the rest are looked up among the
        // keywords with their first letter, comparing lengths before bytes.
        let first = *name.first()?;
        if !(2..=10).contains(&name.len()) || !first.is_ascii_lowercase() {
            return None;
        }
        let (start, end) = bucket(first);
        TABLE[start..end]
            .iter()
            .position(|entry| entry.name.len() == name.len() && entry.name.as_bytes() == name)
            // Invariant: the table has fewer than 256 entries.
            .map(|i| Keyword((start + i) as u8))
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
        matches!(self.name(), "if" | "do" | "while")
    }
}

/// The range of [`TABLE`] whose names start with `letter` (the table is sorted).
fn bucket(letter: u8) -> (usize, usize) {
    static BUCKETS: std::sync::OnceLock<[(u8, u8); 26]> = std::sync::OnceLock::new();
    let buckets = BUCKETS.get_or_init(|| {
        let mut buckets = [(0u8, 0u8); 26];
        for (i, entry) in TABLE.iter().enumerate() {
            let slot = &mut buckets[usize::from(entry.name.as_bytes()[0] - b'a')];
            // Invariant: the table has fewer than 256 entries.
            if slot.1 == 0 {
                slot.0 = i as u8;
            }
            slot.1 = i as u8 + 1;
        }
        buckets
    });
    let (start, end) = buckets[usize::from(letter - b'a')];
    (usize::from(start), usize::from(end))
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
    fn the_table_is_sorted_for_the_binary_search() {
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
        check(".q.count", None);
        for entry in TABLE {
            check(entry.name, Some(entry.display));
        }
        assert!(Keyword::lookup(b"in").is_some_and(Keyword::is_infix));
        assert!(!Keyword::lookup(b"count").is_some_and(Keyword::is_infix));
        assert!(Keyword::lookup(b"while").is_some_and(Keyword::is_control));
    }
}
