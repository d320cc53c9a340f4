//! q syntax for values: what `show` or the console would print, used by `qgate decode`.
//!
//! The text is meant to be typed back into q where q has a literal for the value: `1 0N 3i`,
//! `` `a`b!2 3i ``, `+`a`b!(,2i;,3i)` (a table in its flip form), `(42;::;`foo)`.
//! It differs from the console in a few deliberate ways:
//!
//! * Floats print the shortest text that reads back as the same number (`0.30000000000000004`,
//!   not q's 7-digit `0.3`), so nothing is lost.
//! * One-item vectors and lists use the `,` (enlist) prefix, empty vectors the cast form
//!   (`` `int$() ``), and attributes their prefix (`` `s#1 2 3 ``), as `-3!` does.
//! * Strings escape `"`, `\`, newline, return, tab and other control bytes (`\001`, octal, as q
//!   reads them); bytes that are not UTF-8 are escaped the same way.
//! * Symbols that q cannot read after a backtick print as `` `$"a b" ``.
//! * Dates, months and datetimes outside the years 0000 to 9999 print as a cast of their raw
//!   number (`` `date$2147483646i ``).
//! * Lambdas print their source text, whatever their context; primitives past the 20 operator
//!   glyphs have no q literal and print as `<unary 28>`.

use std::fmt::{self, Write as _};

use chrono::{Datelike as _, NaiveDate, Timelike as _};

use crate::{
    temporal,
    value::{Atom, Attr, Dict, Function, K, List, Table, Vector, VectorData},
};

impl fmt::Display for K {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_k(f, self, true)
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_atom(f, self)
    }
}

/// q's operator glyphs, in the order of the primitive index of types 101 and 102 (reference §4.7).
const OPERATORS: [&str; 20] = [
    ":", "+", "-", "*", "%", "&", "|", "^", "=", "<", ">", "$", ",", "#", "_", "~", "!", "?", "@",
    ".",
];

/// Writes `k`; `with_attr: false` leaves out the attribute of a vector, list or table (a sorted
/// dictionary's keys carry `` `s# `` on the wire, but q shows it once, before the dictionary).
fn write_k(f: &mut dyn fmt::Write, k: &K, with_attr: bool) -> fmt::Result {
    match k {
        K::Atom(atom) => write_atom(f, atom),
        K::Vector(vector) => write_vector(f, vector, with_attr),
        K::List(list) => write_list(f, list, with_attr),
        K::Dict(dict) => write_dict(f, dict),
        K::Table(table) => write_table(f, table, with_attr),
        K::Function(function) => write_function(f, function),
        K::Null => f.write_str("::"),
        K::Error(message) => {
            f.write_char('\'')?;
            f.write_str(&String::from_utf8_lossy(message))
        }
    }
}

/// Writes `k` as the left operand of a verb such as `!`, in parentheses unless it is a single
/// noun (q reads right to left, so `` ,`a!1 `` would be `` ,(`a!1) ``).
fn write_operand(f: &mut dyn fmt::Write, k: &K, with_attr: bool) -> fmt::Result {
    if is_noun(k, with_attr) {
        write_k(f, k, with_attr)
    } else {
        f.write_char('(')?;
        write_k(f, k, with_attr)?;
        f.write_char(')')
    }
}

/// Whether `k` prints as one noun that needs no parentheses on the left of a verb.
fn is_noun(k: &K, with_attr: bool) -> bool {
    let attr_free = |attr: Attr| !with_attr || attr == Attr::None;
    match k {
        K::Atom(atom) => !atom.to_string().contains('$'),
        K::Vector(vector) => {
            attr_free(vector.attr)
                && match vector.len() {
                    0 => matches!(vector.data, VectorData::Char(_)),
                    1 => false,
                    _ => match &vector.data {
                        // These can print as a cast (`` `$("a b";"c") ``, `` `date$... ``).
                        VectorData::Symbol(names) => names.iter().all(is_plain_symbol),
                        VectorData::Month(_) | VectorData::Date(_) | VectorData::Datetime(_) => {
                            let mut text = String::new();
                            // Writing to a String cannot fail.
                            let _ = write_vector(&mut text, vector, false);
                            !text.contains('$')
                        }
                        _ => true,
                    },
                }
        }
        K::List(list) => attr_free(list.attr) && list.items.len() != 1,
        K::Function(Function::Lambda { .. }) => true,
        _ => false,
    }
}

// Atoms.

/// A special value of an integer type: null or an infinity.
#[derive(Clone, Copy)]
enum Special {
    Null,
    Inf,
    NegInf,
}

impl Special {
    fn of_i16(value: i16) -> Option<Self> {
        match value {
            temporal::NULL_I16 => Some(Self::Null),
            temporal::INF_I16 => Some(Self::Inf),
            temporal::NEG_INF_I16 => Some(Self::NegInf),
            _ => None,
        }
    }

    fn of_i32(value: i32) -> Option<Self> {
        match value {
            temporal::NULL_I32 => Some(Self::Null),
            temporal::INF_I32 => Some(Self::Inf),
            temporal::NEG_INF_I32 => Some(Self::NegInf),
            _ => None,
        }
    }

    fn of_i64(value: i64) -> Option<Self> {
        match value {
            temporal::NULL_I64 => Some(Self::Null),
            temporal::INF_I64 => Some(Self::Inf),
            temporal::NEG_INF_I64 => Some(Self::NegInf),
            _ => None,
        }
    }

    fn of_f64(value: f64) -> Option<Self> {
        if value.is_nan() {
            Some(Self::Null)
        } else if value == f64::INFINITY {
            Some(Self::Inf)
        } else if value == f64::NEG_INFINITY {
            Some(Self::NegInf)
        } else {
            None
        }
    }

    /// The text inside a vector of an integer-based type: `0N`, `0W`, `-0W`.
    fn upper(self) -> &'static str {
        match self {
            Self::Null => "0N",
            Self::Inf => "0W",
            Self::NegInf => "-0W",
        }
    }

    /// The text of a float-based infinity or null: `0n`, `0w`, `-0w`.
    fn lower(self) -> &'static str {
        match self {
            Self::Null => "0n",
            Self::Inf => "0w",
            Self::NegInf => "-0w",
        }
    }
}

fn write_atom(f: &mut dyn fmt::Write, atom: &Atom) -> fmt::Result {
    match atom {
        Atom::Boolean(b) => f.write_str(if *b { "1b" } else { "0b" }),
        Atom::Guid(guid) => write_guid(f, guid),
        Atom::Byte(b) => write!(f, "0x{b:02x}"),
        Atom::Short(v) => match Special::of_i16(*v) {
            Some(special) => write_special_atom(f, special, 'h'),
            None => write!(f, "{v}h"),
        },
        Atom::Int(v) => match Special::of_i32(*v) {
            Some(special) => write_special_atom(f, special, 'i'),
            None => write!(f, "{v}i"),
        },
        Atom::Long(v) => match Special::of_i64(*v) {
            Some(special) => f.write_str(special.upper()),
            None => write!(f, "{v}"),
        },
        Atom::Real(v) => match Special::of_f64(f64::from(*v)) {
            Some(Special::Null) => f.write_str("0Ne"),
            Some(special) => write!(f, "{}e", special.lower()),
            None => write!(f, "{}e", real_text(*v)),
        },
        Atom::Float(v) => match Special::of_f64(*v) {
            Some(special) => f.write_str(special.lower()),
            None => {
                let text = float_text(*v);
                f.write_str(&text)?;
                if is_whole(&text) {
                    f.write_char('f')
                } else {
                    Ok(())
                }
            }
        },
        Atom::Char(c) => write_string(f, std::slice::from_ref(c)),
        Atom::Symbol(name) => write_symbol(f, name),
        Atom::Timestamp(v) => write_temporal_atom(f, Temporal::Timestamp, Raw::I64(*v)),
        Atom::Month(v) => write_temporal_atom(f, Temporal::Month, Raw::I32(*v)),
        Atom::Date(v) => write_temporal_atom(f, Temporal::Date, Raw::I32(*v)),
        Atom::Datetime(v) => write_temporal_atom(f, Temporal::Datetime, Raw::F64(*v)),
        Atom::Timespan(v) => write_temporal_atom(f, Temporal::Timespan, Raw::I64(*v)),
        Atom::Minute(v) => write_temporal_atom(f, Temporal::Minute, Raw::I32(*v)),
        Atom::Second(v) => write_temporal_atom(f, Temporal::Second, Raw::I32(*v)),
        Atom::Time(v) => write_temporal_atom(f, Temporal::Time, Raw::I32(*v)),
    }
}

/// `0N`, `0W` or `-0W` followed by the type's letter.
fn write_special_atom(f: &mut dyn fmt::Write, special: Special, letter: char) -> fmt::Result {
    f.write_str(special.upper())?;
    f.write_char(letter)
}

fn write_guid(f: &mut dyn fmt::Write, guid: &[u8; 16]) -> fmt::Result {
    if guid.iter().all(|&b| b == 0) {
        return f.write_str("0Ng");
    }
    for (i, b) in guid.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            f.write_char('-')?;
        }
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

/// The shortest text that reads back as `v`, with an exponent for very large and very small
/// magnitudes (`1e+20` in q; `1e20` here, which q reads the same).
fn float_text(v: f64) -> String {
    let magnitude = v.abs();
    if magnitude != 0.0 && !(1e-5..1e16).contains(&magnitude) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// [`float_text`] for a real, from the real's own shortest text.
fn real_text(v: f32) -> String {
    let magnitude = v.abs();
    if magnitude != 0.0 && !(1e-5..1e16).contains(&magnitude) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// Whether a float's text reads as an integer in q, and so needs the `f` suffix.
fn is_whole(text: &str) -> bool {
    !text.contains(['.', 'e'])
}

/// Writes a q string literal: `"abc"`, with q's escapes.
fn write_string(f: &mut dyn fmt::Write, bytes: &[u8]) -> fmt::Result {
    f.write_char('"')?;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if c.is_control() => {
                    let mut utf8 = [0; 4];
                    for b in c.encode_utf8(&mut utf8).bytes() {
                        write!(f, "\\{b:03o}")?;
                    }
                }
                c => f.write_char(c)?,
            }
        }
        for b in chunk.invalid() {
            write!(f, "\\{b:03o}")?;
        }
    }
    f.write_char('"')
}

/// Whether q reads `name` back after a backtick: letters, digits, `_` and `.`, plus `:` and `/`
/// in a file handle (`` `:dir/file ``).
fn is_plain_symbol(name: &[u8]) -> bool {
    let handle = name.first() == Some(&b':');
    name.iter().all(|&b| {
        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':') || (handle && b == b'/')
    })
}

fn write_symbol(f: &mut dyn fmt::Write, name: &[u8]) -> fmt::Result {
    if is_plain_symbol(name) {
        f.write_char('`')?;
        f.write_str(&String::from_utf8_lossy(name))
    } else {
        f.write_str("`$")?;
        write_string(f, name)
    }
}

// Temporal values.

/// The temporal types, which share their handling of nulls and infinities.
#[derive(Clone, Copy)]
enum Temporal {
    Timestamp,
    Month,
    Date,
    Datetime,
    Timespan,
    Minute,
    Second,
    Time,
}

/// A temporal type's raw number.
#[derive(Clone, Copy)]
enum Raw {
    I32(i32),
    I64(i64),
    F64(f64),
}

impl Temporal {
    /// q's type letter.
    fn letter(self) -> char {
        match self {
            Self::Timestamp => 'p',
            Self::Month => 'm',
            Self::Date => 'd',
            Self::Datetime => 'z',
            Self::Timespan => 'n',
            Self::Minute => 'u',
            Self::Second => 'v',
            Self::Time => 't',
        }
    }

    /// q's type name, for casts.
    fn name(self) -> &'static str {
        match self {
            Self::Timestamp => "timestamp",
            Self::Month => "month",
            Self::Date => "date",
            Self::Datetime => "datetime",
            Self::Timespan => "timespan",
            Self::Minute => "minute",
            Self::Second => "second",
            Self::Time => "time",
        }
    }
}

impl Raw {
    fn special(self) -> Option<Special> {
        match self {
            Self::I32(v) => Special::of_i32(v),
            Self::I64(v) => Special::of_i64(v),
            Self::F64(v) => Special::of_f64(v),
        }
    }
}

/// The text of an ordinary (not null, not infinite) temporal value, or `None` when it has no
/// q literal (a date outside the years 0000 to 9999).
fn temporal_text(kind: Temporal, raw: Raw) -> Option<String> {
    let mut text = String::new();
    match (kind, raw) {
        (Temporal::Timestamp, Raw::I64(nanos)) => {
            let dt = temporal::timestamp_to_datetime(nanos)?;
            write_date(&mut text, dt.date())?;
            text.push('D');
            let nanos_of_day = i64::from(dt.time().num_seconds_from_midnight())
                * temporal::NANOS_PER_SECOND
                + i64::from(dt.time().nanosecond());
            write_clock(&mut text, nanos_of_day.unsigned_abs(), 1_000_000_000, 9);
        }
        (Temporal::Month, Raw::I32(months)) => {
            let year = i64::from(temporal::EPOCH_YEAR) + i64::from(months.div_euclid(12));
            if !(0..=9999).contains(&year) {
                return None;
            }
            let _ = write!(text, "{year:04}.{:02}", months.rem_euclid(12) + 1);
        }
        (Temporal::Date, Raw::I32(days)) => {
            write_date(&mut text, temporal::date_to_naive(days)?)?;
        }
        (Temporal::Datetime, Raw::F64(days)) => {
            let dt = temporal::datetime_f64_to_naive(days)?;
            write_date(&mut text, dt.date())?;
            text.push('T');
            let millis = u64::from(dt.time().num_seconds_from_midnight()) * 1000
                + u64::from(dt.time().nanosecond() / 1_000_000);
            write_clock(&mut text, millis, 1000, 3);
        }
        (Temporal::Timespan, Raw::I64(nanos)) => {
            if nanos < 0 {
                text.push('-');
            }
            let magnitude = nanos.unsigned_abs();
            let per_day = temporal::NANOS_PER_DAY.unsigned_abs();
            let _ = write!(text, "{}D", magnitude / per_day);
            write_clock(&mut text, magnitude % per_day, 1_000_000_000, 9);
        }
        (Temporal::Minute, Raw::I32(minutes)) => {
            if minutes < 0 {
                text.push('-');
            }
            let m = minutes.unsigned_abs();
            let _ = write!(text, "{:02}:{:02}", m / 60, m % 60);
        }
        (Temporal::Second, Raw::I32(seconds)) => {
            if seconds < 0 {
                text.push('-');
            }
            let s = seconds.unsigned_abs();
            let _ = write!(text, "{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
        }
        (Temporal::Time, Raw::I32(millis)) => {
            if millis < 0 {
                text.push('-');
            }
            write_clock(&mut text, u64::from(millis.unsigned_abs()), 1000, 3);
        }
        _ => return None,
    }
    Some(text)
}

/// Appends `yyyy.mm.dd`; `None` outside the years q prints.
fn write_date(text: &mut String, date: NaiveDate) -> Option<()> {
    if !(0..=9999).contains(&date.year()) {
        return None;
    }
    let _ = write!(
        text,
        "{:04}.{:02}.{:02}",
        date.year(),
        date.month(),
        date.day()
    );
    Some(())
}

/// Appends `hh:mm:ss.fff` for an amount of `1/per_second` seconds, with `digits` fraction digits.
fn write_clock(text: &mut String, amount: u64, per_second: u64, digits: usize) {
    let seconds = amount / per_second;
    let _ = write!(
        text,
        "{:02}:{:02}:{:02}.{:0digits$}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        amount % per_second
    );
}

/// Writes a temporal atom: its text, `0Nd`, `0Wd`, `-0Wd` (`0wz` for datetimes), or a cast when
/// it has no literal.
fn write_temporal_atom(f: &mut dyn fmt::Write, kind: Temporal, raw: Raw) -> fmt::Result {
    match raw.special() {
        Some(Special::Null) => write!(f, "0N{}", kind.letter()),
        Some(special @ (Special::Inf | Special::NegInf)) => match kind {
            Temporal::Datetime => write!(f, "{}z", special.lower()),
            _ => write!(f, "{}{}", special.upper(), kind.letter()),
        },
        None => match temporal_text(kind, raw) {
            Some(text) => {
                f.write_str(&text)?;
                if let Temporal::Month = kind {
                    f.write_char('m')?;
                }
                Ok(())
            }
            None => {
                write!(f, "`{}$", kind.name())?;
                match raw {
                    Raw::I32(v) => write!(f, "{v}i"),
                    Raw::I64(v) => write!(f, "{v}"),
                    Raw::F64(v) => {
                        let text = float_text(v);
                        f.write_str(&text)?;
                        if is_whole(&text) {
                            f.write_char('f')
                        } else {
                            Ok(())
                        }
                    }
                }
            }
        },
    }
}

// Vectors.

/// q's name for a vector's type, for the empty cast form `` `int$() ``.
fn type_name(data: &VectorData) -> &'static str {
    match data {
        VectorData::Boolean(_) => "boolean",
        VectorData::Guid(_) => "guid",
        VectorData::Byte(_) => "byte",
        VectorData::Short(_) => "short",
        VectorData::Int(_) => "int",
        VectorData::Long(_) => "long",
        VectorData::Real(_) => "real",
        VectorData::Float(_) => "float",
        VectorData::Char(_) => "char",
        VectorData::Symbol(_) => "symbol",
        VectorData::Timestamp(_) => "timestamp",
        VectorData::Month(_) => "month",
        VectorData::Date(_) => "date",
        VectorData::Datetime(_) => "datetime",
        VectorData::Timespan(_) => "timespan",
        VectorData::Minute(_) => "minute",
        VectorData::Second(_) => "second",
        VectorData::Time(_) => "time",
    }
}

fn write_vector(f: &mut dyn fmt::Write, vector: &Vector, with_attr: bool) -> fmt::Result {
    if with_attr {
        f.write_str(vector.attr.prefix())?;
    }
    let data = &vector.data;
    match data.len() {
        0 => {
            return match data {
                VectorData::Char(_) => f.write_str("\"\""),
                _ => write!(f, "`{}$()", type_name(data)),
            };
        }
        1 => {
            if let Some(atom) = data.atom(0) {
                f.write_char(',')?;
                return write_atom(f, &atom);
            }
        }
        _ => {}
    }
    match data {
        VectorData::Boolean(v) => {
            for &b in v {
                f.write_char(if b { '1' } else { '0' })?;
            }
            f.write_char('b')
        }
        VectorData::Guid(v) => write_spaced(f, v, |f, guid| write_guid(f, guid)),
        VectorData::Byte(v) => {
            f.write_str("0x")?;
            v.iter().try_for_each(|b| write!(f, "{b:02x}"))
        }
        VectorData::Short(v) => {
            write_spaced(f, v, |f, &x| match Special::of_i16(x) {
                Some(special) => f.write_str(special.upper()),
                None => write!(f, "{x}"),
            })?;
            f.write_char('h')
        }
        VectorData::Int(v) => {
            write_spaced(f, v, |f, &x| match Special::of_i32(x) {
                Some(special) => f.write_str(special.upper()),
                None => write!(f, "{x}"),
            })?;
            f.write_char('i')
        }
        VectorData::Long(v) => write_spaced(f, v, |f, &x| match Special::of_i64(x) {
            Some(special) => f.write_str(special.upper()),
            None => write!(f, "{x}"),
        }),
        VectorData::Real(v) => {
            write_spaced(f, v, |f, &x| match Special::of_f64(f64::from(x)) {
                Some(Special::Null) => f.write_str("0N"),
                Some(special) => f.write_str(special.lower()),
                None => f.write_str(&real_text(x)),
            })?;
            f.write_char('e')
        }
        VectorData::Float(v) => {
            let mut whole = true;
            write_spaced(f, v, |f, &x| match Special::of_f64(x) {
                Some(special) => {
                    whole = false;
                    f.write_str(special.lower())
                }
                None => {
                    let text = float_text(x);
                    whole &= is_whole(&text);
                    f.write_str(&text)
                }
            })?;
            if whole { f.write_char('f') } else { Ok(()) }
        }
        VectorData::Char(v) => write_string(f, v),
        VectorData::Symbol(v) => {
            if v.iter().all(is_plain_symbol) {
                v.iter().try_for_each(|name| write_symbol(f, name))
            } else {
                // `$ on a list of strings; one-character strings need their `,`.
                f.write_str("`$(")?;
                for (i, name) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_char(';')?;
                    }
                    if name.len() == 1 {
                        f.write_char(',')?;
                    }
                    write_string(f, name)?;
                }
                f.write_char(')')
            }
        }
        VectorData::Timestamp(v) => write_temporal_vector(f, Temporal::Timestamp, v, Raw::I64),
        VectorData::Month(v) => write_temporal_vector(f, Temporal::Month, v, Raw::I32),
        VectorData::Date(v) => write_temporal_vector(f, Temporal::Date, v, Raw::I32),
        VectorData::Datetime(v) => write_temporal_vector(f, Temporal::Datetime, v, Raw::F64),
        VectorData::Timespan(v) => write_temporal_vector(f, Temporal::Timespan, v, Raw::I64),
        VectorData::Minute(v) => write_temporal_vector(f, Temporal::Minute, v, Raw::I32),
        VectorData::Second(v) => write_temporal_vector(f, Temporal::Second, v, Raw::I32),
        VectorData::Time(v) => write_temporal_vector(f, Temporal::Time, v, Raw::I32),
    }
}

/// Writes a temporal vector of two or more items: `2001.01.01 0N 2001.01.03`.
///
/// Nulls and infinities print as `0N`, `0W` and `-0W` (`0w` and `-0w` for datetimes), and the
/// type letter follows when no item shows the type (`0N 0Nd`) or the items alone would read as
/// another type (months, `2001.01 2001.02m`).
/// A vector with an item that has no literal prints as a cast of its raw numbers.
fn write_temporal_vector<T: Copy>(
    f: &mut dyn fmt::Write,
    kind: Temporal,
    items: &[T],
    raw: impl Fn(T) -> Raw,
) -> fmt::Result {
    let mut text = String::new();
    let mut all_special = true;
    for (i, &item) in items.iter().enumerate() {
        if i > 0 {
            text.push(' ');
        }
        let item = raw(item);
        match item.special() {
            Some(Special::Null) => text.push_str("0N"),
            Some(special) => text.push_str(match kind {
                Temporal::Datetime => special.lower(),
                _ => special.upper(),
            }),
            None => {
                all_special = false;
                match temporal_text(kind, item) {
                    Some(item_text) => text.push_str(&item_text),
                    None => return write_raw_cast(f, kind, items, raw),
                }
            }
        }
    }
    f.write_str(&text)?;
    if all_special || matches!(kind, Temporal::Month) {
        f.write_char(kind.letter())?;
    }
    Ok(())
}

/// Writes `` `date$1 2 3i ``: a cast of a temporal vector's raw numbers.
fn write_raw_cast<T: Copy>(
    f: &mut dyn fmt::Write,
    kind: Temporal,
    items: &[T],
    raw: impl Fn(T) -> Raw,
) -> fmt::Result {
    write!(f, "`{}$", kind.name())?;
    let mut whole = true;
    let mut letter = None;
    write_spaced(f, items, |f, &item| match raw(item) {
        Raw::I32(v) => {
            letter = Some('i');
            match Special::of_i32(v) {
                Some(special) => f.write_str(special.upper()),
                None => write!(f, "{v}"),
            }
        }
        Raw::I64(v) => match Special::of_i64(v) {
            Some(special) => f.write_str(special.upper()),
            None => write!(f, "{v}"),
        },
        Raw::F64(v) => {
            letter = Some('f');
            match Special::of_f64(v) {
                Some(special) => {
                    whole = false;
                    f.write_str(special.lower())
                }
                None => {
                    let text = float_text(v);
                    whole &= is_whole(&text);
                    f.write_str(&text)
                }
            }
        }
    })?;
    match letter {
        Some('f') if !whole => Ok(()),
        Some(letter) => f.write_char(letter),
        None => Ok(()),
    }
}

/// Writes items separated by spaces.
fn write_spaced<T>(
    f: &mut dyn fmt::Write,
    items: &[T],
    mut write_item: impl FnMut(&mut dyn fmt::Write, &T) -> fmt::Result,
) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_char(' ')?;
        }
        write_item(f, item)?;
    }
    Ok(())
}

// General lists, dictionaries and tables.

fn write_list(f: &mut dyn fmt::Write, list: &List, with_attr: bool) -> fmt::Result {
    if with_attr {
        f.write_str(list.attr.prefix())?;
    }
    match list.items.as_slice() {
        [] => f.write_str("()"),
        [item] => {
            f.write_char(',')?;
            write_k(f, item, true)
        }
        items => {
            f.write_char('(')?;
            write_separated(f, items)?;
            f.write_char(')')
        }
    }
}

/// Writes values separated by `;`, as in a list or an argument list.
fn write_separated(f: &mut dyn fmt::Write, items: &[K]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_char(';')?;
        }
        write_k(f, item, true)?;
    }
    Ok(())
}

/// `` `a`b!2 3i ``; a sorted dictionary shows its `` `s# `` once, in front, as q does, and a
/// keyed table is `(+`a!,,1)!+`b!,,2`.
fn write_dict(f: &mut dyn fmt::Write, dict: &Dict) -> fmt::Result {
    if dict.sorted {
        f.write_str(Attr::Sorted.prefix())?;
    }
    write_operand(f, &dict.keys, !dict.sorted)?;
    f.write_char('!')?;
    write_k(f, &dict.values, true)
}

/// A table in q's flip form: `+`a`b!(,2i;,3i)`.
fn write_table(f: &mut dyn fmt::Write, table: &Table, with_attr: bool) -> fmt::Result {
    if with_attr {
        f.write_str(table.attr.prefix())?;
    }
    f.write_char('+')?;
    write_operand(f, &table.columns, true)?;
    f.write_char('!')?;
    write_k(f, &table.values, true)
}

// Functions.

fn write_function(f: &mut dyn fmt::Write, function: &Function) -> fmt::Result {
    match function {
        Function::Lambda { source, .. } => match &**source {
            K::Vector(Vector {
                data: VectorData::Char(text),
                ..
            }) => f.write_str(&String::from_utf8_lossy(text)),
            other => write_k(f, other, true),
        },
        Function::Unary(index) => match OPERATORS.get(usize::from(*index)) {
            Some(op) => write!(f, "{op}:"),
            None => write!(f, "<unary {index}>"),
        },
        Function::Binary(index) => match OPERATORS.get(usize::from(*index)) {
            Some(op) => f.write_str(op),
            None => write!(f, "<binary {index}>"),
        },
        Function::Ternary(index) => write!(f, "<ternary {index}>"),
        Function::Projection(items) => match items.split_first() {
            Some((head, args)) => {
                write_applicable(f, head)?;
                f.write_char('[')?;
                write_separated(f, args)?;
                f.write_char(']')
            }
            None => f.write_str("<empty projection>"),
        },
        Function::Composition(items) => {
            f.write_str("'[")?;
            write_separated(f, items)?;
            f.write_char(']')
        }
        Function::Each(g) => write_iterated(f, g, "'"),
        Function::Over(g) => write_iterated(f, g, "/"),
        Function::Scan(g) => write_iterated(f, g, "\\"),
        Function::EachPrior(g) => write_iterated(f, g, "':"),
        Function::EachRight(g) => write_iterated(f, g, "/:"),
        Function::EachLeft(g) => write_iterated(f, g, "\\:"),
    }
}

/// Writes `g` followed by an iterator glyph: `+/`, `{x}'`, `('[f;g])'`.
fn write_iterated(f: &mut dyn fmt::Write, g: &K, glyph: &str) -> fmt::Result {
    write_applicable(f, g)?;
    f.write_str(glyph)
}

/// Writes a value that is applied or iterated: bare when the glyph or bracket binds to all of
/// it, in parentheses otherwise.
fn write_applicable(f: &mut dyn fmt::Write, g: &K) -> fmt::Result {
    let bare = matches!(
        g,
        K::Function(
            Function::Lambda { .. }
                | Function::Unary(_)
                | Function::Binary(_)
                | Function::Projection(_)
                | Function::Each(_)
                | Function::Over(_)
                | Function::Scan(_)
                | Function::EachPrior(_)
                | Function::EachRight(_)
                | Function::EachLeft(_)
        )
    );
    if bare {
        write_k(f, g, true)
    } else {
        f.write_char('(')?;
        write_k(f, g, true)?;
        f.write_char(')')
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{temporal::*, value::Symbols};

    #[track_caller]
    fn check(value: impl Into<K>, expect: &str) {
        assert_eq!(value.into().to_string(), expect);
    }

    fn vector(data: VectorData) -> K {
        K::vector(data)
    }

    fn with_attr(attr: Attr, data: VectorData) -> K {
        K::Vector(Vector { attr, data })
    }

    fn lambda(source: &str) -> K {
        K::Function(Function::Lambda {
            context: Vec::new(),
            source: Box::new(K::string(source)),
        })
    }

    fn atoms() -> Vec<(Atom, &'static str)> {
        let guid = [
            0x8c, 0x68, 0x0a, 0x01, 0x5a, 0x49, 0x5a, 0xab, 0x5a, 0x65, 0xd4, 0xbf, 0xdd, 0xb6,
            0xa6, 0x61,
        ];
        vec![
            (Atom::Boolean(false), "0b"),
            (Atom::Boolean(true), "1b"),
            (Atom::Guid(guid), "8c680a01-5a49-5aab-5a65-d4bfddb6a661"),
            (Atom::Guid([0; 16]), "0Ng"),
            (Atom::Byte(0x2a), "0x2a"),
            (Atom::Byte(0), "0x00"),
            (Atom::Short(-234), "-234h"),
            (Atom::Short(NULL_I16), "0Nh"),
            (Atom::Short(INF_I16), "0Wh"),
            (Atom::Short(NEG_INF_I16), "-0Wh"),
            (Atom::Int(1), "1i"),
            (Atom::Int(NULL_I32), "0Ni"),
            (Atom::Int(INF_I32), "0Wi"),
            (Atom::Int(NEG_INF_I32), "-0Wi"),
            (Atom::Long(1), "1"),
            (Atom::Long(-42), "-42"),
            (Atom::Long(NULL_I64), "0N"),
            (Atom::Long(INF_I64), "0W"),
            (Atom::Long(NEG_INF_I64), "-0W"),
            (Atom::Real(5.5), "5.5e"),
            (Atom::Real(1.0), "1e"),
            (Atom::Real(f32::NAN), "0Ne"),
            (Atom::Real(f32::INFINITY), "0we"),
            (Atom::Real(f32::NEG_INFINITY), "-0we"),
            (Atom::Float(3.234), "3.234"),
            (Atom::Float(1.0), "1f"),
            (Atom::Float(-2.0), "-2f"),
            (Atom::Float(0.0), "0f"),
            (Atom::Float(0.1 + 0.2), "0.30000000000000004"),
            (Atom::Float(1e20), "1e20"),
            (Atom::Float(1.5e-7), "1.5e-7"),
            (Atom::Float(f64::NAN), "0n"),
            (Atom::Float(f64::INFINITY), "0w"),
            (Atom::Float(f64::NEG_INFINITY), "-0w"),
            (Atom::Char(b'a'), "\"a\""),
            (Atom::Char(b'0'), "\"0\""),
            (Atom::Char(b' '), "\" \""),
            (Atom::Char(b'"'), "\"\\\"\""),
            (Atom::Char(b'\n'), "\"\\n\""),
            (Atom::Char(1), "\"\\001\""),
            (Atom::Char(0xff), "\"\\377\""),
            (Atom::Symbol(b"GOOG".to_vec()), "`GOOG"),
            (Atom::Symbol(Vec::new()), "`"),
            (Atom::Symbol(b":test/".to_vec()), "`:test/"),
            (Atom::Symbol(b".d.x_1".to_vec()), "`.d.x_1"),
            (Atom::Symbol(b"a b".to_vec()), "`$\"a b\""),
            (Atom::Symbol(b"a/b".to_vec()), "`$\"a/b\""),
            // Timestamps: the kdbgo and qPython vectors, before 2000, the extremes.
            (
                Atom::Timestamp(570_246_540_884_361_000),
                "2018.01.26D01:49:00.884361000",
            ),
            (
                Atom::Timestamp(279_417_600_000_000),
                "2000.01.04D05:36:57.600000000",
            ),
            (Atom::Timestamp(0), "2000.01.01D00:00:00.000000000"),
            (Atom::Timestamp(-1), "1999.12.31D23:59:59.999999999"),
            (
                Atom::Timestamp(INF_I64 - 1),
                "2292.04.10D23:47:16.854775806",
            ),
            (Atom::Timestamp(NULL_I64), "0Np"),
            (Atom::Timestamp(INF_I64), "0Wp"),
            (Atom::Timestamp(NEG_INF_I64), "-0Wp"),
            (Atom::Month(12), "2001.01m"),
            (Atom::Month(-1), "1999.12m"),
            (Atom::Month(NULL_I32), "0Nm"),
            (Atom::Month(INF_I32), "0Wm"),
            (Atom::Month(NEG_INF_I32), "-0Wm"),
            (Atom::Month(200_000), "`month$200000i"),
            (Atom::Date(366), "2001.01.01"),
            (Atom::Date(-1), "1999.12.31"),
            (Atom::Date(NULL_I32), "0Nd"),
            (Atom::Date(INF_I32), "0Wd"),
            (Atom::Date(NEG_INF_I32), "-0Wd"),
            (Atom::Date(INF_I32 - 1), "`date$2147483646i"),
            (Atom::Datetime(366.0), "2001.01.01T00:00:00.000"),
            (Atom::Datetime(-0.25), "1999.12.31T18:00:00.000"),
            (
                Atom::Datetime(1.5 + 0.5 / 86_400_000.0),
                "2000.01.02T12:00:00.001",
            ),
            (Atom::Datetime(f64::NAN), "0Nz"),
            (Atom::Datetime(f64::INFINITY), "0wz"),
            (Atom::Datetime(f64::NEG_INFINITY), "-0wz"),
            (Atom::Datetime(1e12), "`datetime$1000000000000f"),
            (Atom::Timespan(20_217_600_000_000), "0D05:36:57.600000000"),
            (Atom::Timespan(NANOS_PER_DAY + 1), "1D00:00:00.000000001"),
            (Atom::Timespan(-NANOS_PER_SECOND), "-0D00:00:01.000000000"),
            (Atom::Timespan(NULL_I64), "0Nn"),
            (Atom::Timespan(INF_I64), "0Wn"),
            (Atom::Timespan(NEG_INF_I64), "-0Wn"),
            (Atom::Minute(721), "12:01"),
            (Atom::Minute(-1), "-00:01"),
            (Atom::Minute(1500), "25:00"),
            (Atom::Minute(NULL_I32), "0Nu"),
            (Atom::Minute(INF_I32), "0Wu"),
            (Atom::Second(43_500), "12:05:00"),
            (Atom::Second(-61), "-00:01:01"),
            (Atom::Second(NULL_I32), "0Nv"),
            (Atom::Second(NEG_INF_I32), "-0Wv"),
            (Atom::Time(43_499_123), "12:04:59.123"),
            (Atom::Time(155_554_567), "43:12:34.567"),
            (Atom::Time(-1), "-00:00:00.001"),
            (Atom::Time(NULL_I32), "0Nt"),
            (Atom::Time(INF_I32), "0Wt"),
        ]
    }

    #[test]
    fn atoms_print_as_q_literals() {
        for (atom, expect) in atoms() {
            assert_eq!(atom.to_string(), expect, "{atom:?}");
            check(atom, expect);
        }
    }

    #[test]
    fn one_item_vectors_are_enlisted_atoms() {
        for (atom, expect) in atoms() {
            let data = match atom.clone() {
                Atom::Boolean(v) => VectorData::Boolean(vec![v]),
                Atom::Guid(v) => VectorData::Guid(vec![v]),
                Atom::Byte(v) => VectorData::Byte(vec![v]),
                Atom::Short(v) => VectorData::Short(vec![v]),
                Atom::Int(v) => VectorData::Int(vec![v]),
                Atom::Long(v) => VectorData::Long(vec![v]),
                Atom::Real(v) => VectorData::Real(vec![v]),
                Atom::Float(v) => VectorData::Float(vec![v]),
                Atom::Char(v) => VectorData::Char(vec![v]),
                Atom::Symbol(v) => VectorData::Symbol([v].into_iter().collect()),
                Atom::Timestamp(v) => VectorData::Timestamp(vec![v]),
                Atom::Month(v) => VectorData::Month(vec![v]),
                Atom::Date(v) => VectorData::Date(vec![v]),
                Atom::Datetime(v) => VectorData::Datetime(vec![v]),
                Atom::Timespan(v) => VectorData::Timespan(vec![v]),
                Atom::Minute(v) => VectorData::Minute(vec![v]),
                Atom::Second(v) => VectorData::Second(vec![v]),
                Atom::Time(v) => VectorData::Time(vec![v]),
            };
            assert_eq!(vector(data).to_string(), format!(",{expect}"), "{atom:?}");
        }
    }

    #[test]
    fn vectors() {
        let guid = |last| {
            let mut g = [0; 16];
            g[15] = last;
            g
        };
        let cases = [
            (VectorData::Boolean(vec![false, true, false]), "010b"),
            (
                VectorData::Guid(vec![guid(1), [0; 16]]),
                "00000000-0000-0000-0000-000000000001 0Ng",
            ),
            (VectorData::Byte(vec![0, 1, 2, 3, 4]), "0x0001020304"),
            (
                VectorData::Short(vec![1, NULL_I16, INF_I16, NEG_INF_I16]),
                "1 0N 0W -0Wh",
            ),
            (VectorData::Int(vec![1, 2, 3]), "1 2 3i"),
            (VectorData::Int(vec![NULL_I32, NULL_I32]), "0N 0Ni"),
            (VectorData::Long(vec![1, NULL_I64, 3]), "1 0N 3"),
            (VectorData::Long(vec![INF_I64, NEG_INF_I64]), "0W -0W"),
            (
                VectorData::Real(vec![5.5, f32::NAN, 1.0, f32::INFINITY]),
                "5.5 0N 1 0we",
            ),
            (VectorData::Float(vec![1.0, 2.0]), "1 2f"),
            (VectorData::Float(vec![1.5, 2.0]), "1.5 2"),
            (
                VectorData::Float(vec![1.0, f64::NAN, f64::NEG_INFINITY]),
                "1 0n -0w",
            ),
            (VectorData::Char(b"abc".to_vec()), "\"abc\""),
            (
                VectorData::Char(b"a\"b\\c\r\n\t\x7f".to_vec()),
                r#""a\"b\\c\r\n\t\177""#,
            ),
            (VectorData::Char("héllo".as_bytes().to_vec()), "\"héllo\""),
            (VectorData::Char(vec![b'a', 0xc3]), "\"a\\303\""),
            (
                VectorData::Symbol(["a", "b", "c"].into_iter().collect()),
                "`a`b`c",
            ),
            (
                VectorData::Symbol(["abc", "", "c"].into_iter().collect()),
                "`abc``c",
            ),
            (
                VectorData::Symbol(["a b", "c", ""].into_iter().collect()),
                "`$(\"a b\";,\"c\";\"\")",
            ),
            (
                VectorData::Timestamp(vec![0, NULL_I64]),
                "2000.01.01D00:00:00.000000000 0N",
            ),
            (VectorData::Timestamp(vec![NULL_I64, INF_I64]), "0N 0Wp"),
            (
                VectorData::Month(vec![161, 162, 163]),
                "2013.06 2013.07 2013.08m",
            ),
            (VectorData::Month(vec![NULL_I32, 0]), "0N 2000.01m"),
            (VectorData::Month(vec![0, 200_000]), "`month$0 200000i"),
            (
                VectorData::Date(vec![4909, NULL_I32, INF_I32]),
                "2013.06.10 0N 0W",
            ),
            (VectorData::Date(vec![NULL_I32, NULL_I32]), "0N 0Nd"),
            (
                VectorData::Date(vec![0, INF_I32 - 1, NULL_I32]),
                "`date$0 2147483646 0Ni",
            ),
            (
                VectorData::Datetime(vec![366.0, f64::NAN, f64::INFINITY]),
                "2001.01.01T00:00:00.000 0N 0w",
            ),
            (VectorData::Datetime(vec![f64::NAN, f64::NAN]), "0N 0Nz"),
            (
                VectorData::Datetime(vec![0.5, 1e12]),
                "`datetime$0.5 1000000000000",
            ),
            (
                VectorData::Timespan(vec![0, -1]),
                "0D00:00:00.000000000 -0D00:00:00.000000001",
            ),
            (VectorData::Minute(vec![0, 1282]), "00:00 21:22"),
            (VectorData::Minute(vec![NEG_INF_I32, NULL_I32]), "-0W 0Nu"),
            (VectorData::Second(vec![43_500, 0]), "12:05:00 00:00:00"),
            (
                VectorData::Time(vec![78_817_963, NULL_I32]),
                "21:53:37.963 0N",
            ),
            (VectorData::Time(vec![NULL_I32, NULL_I32]), "0N 0Nt"),
        ];
        for (data, expect) in cases {
            check(vector(data), expect);
        }
    }

    #[test]
    fn empty_vectors_are_casts() {
        let cases = [
            (VectorData::Boolean(vec![]), "`boolean$()"),
            (VectorData::Guid(vec![]), "`guid$()"),
            (VectorData::Byte(vec![]), "`byte$()"),
            (VectorData::Short(vec![]), "`short$()"),
            (VectorData::Int(vec![]), "`int$()"),
            (VectorData::Long(vec![]), "`long$()"),
            (VectorData::Real(vec![]), "`real$()"),
            (VectorData::Float(vec![]), "`float$()"),
            (VectorData::Char(vec![]), "\"\""),
            (VectorData::Symbol(Symbols::new()), "`symbol$()"),
            (VectorData::Timestamp(vec![]), "`timestamp$()"),
            (VectorData::Month(vec![]), "`month$()"),
            (VectorData::Date(vec![]), "`date$()"),
            (VectorData::Datetime(vec![]), "`datetime$()"),
            (VectorData::Timespan(vec![]), "`timespan$()"),
            (VectorData::Minute(vec![]), "`minute$()"),
            (VectorData::Second(vec![]), "`second$()"),
            (VectorData::Time(vec![]), "`time$()"),
        ];
        for (data, expect) in cases {
            check(vector(data), expect);
        }
    }

    #[test]
    fn attributes_prefix_vectors() {
        check(
            with_attr(Attr::Sorted, VectorData::Long(vec![1, 2, 3])),
            "`s#1 2 3",
        );
        check(with_attr(Attr::Unique, VectorData::Int(vec![1])), "`u#,1i");
        check(
            with_attr(
                Attr::Parted,
                VectorData::Symbol(["a", "a"].into_iter().collect()),
            ),
            "`p#`a`a",
        );
        check(
            with_attr(Attr::Grouped, VectorData::Int(vec![])),
            "`g#`int$()",
        );
    }

    #[test]
    fn general_lists() {
        check(K::list(vec![]), "()");
        check(
            K::list(vec![
                K::long(1),
                Atom::Short(2).into(),
                Atom::Float(3.234).into(),
                Atom::Char(b'4').into(),
            ]),
            "(1;2h;3.234;\"4\")",
        );
        check(
            K::list(vec![K::long(42), K::Null, K::symbol("foo")]),
            "(42;::;`foo)",
        );
        check(
            K::list(vec![K::string("ac"), K::symbol("b"), K::symbol("")]),
            "(\"ac\";`b;`)",
        );
        check(
            K::list(vec![
                K::string("one"),
                K::string("two"),
                Atom::Char(b'3').into(),
            ]),
            "(\"one\";\"two\";\"3\")",
        );
        check(
            K::list(vec![
                K::string("one"),
                K::string("3").clone(),
                K::string(""),
            ]),
            "(\"one\";,\"3\";\"\")",
        );
        // One item: enlisted.
        check(
            K::list(vec![vector(VectorData::Byte(vec![0, 1, 2, 3, 4]))]),
            ",0x0001020304",
        );
        check(
            K::list(vec![K::list(vec![K::long(1), K::symbol("a")])]),
            ",(1;`a)",
        );
        check(K::list(vec![K::list(vec![])]), ",()");
        // Nesting.
        check(
            K::list(vec![
                K::list(vec![vector(VectorData::Long(vec![1, 2])), K::list(vec![])]),
                K::error("type"),
            ]),
            "((1 2;());'type)",
        );
        check(
            K::List(List {
                attr: Attr::Sorted,
                items: vec![K::long(1), K::string("a b")],
            }),
            "`s#(1;\"a b\")",
        );
    }

    #[test]
    fn dictionaries() {
        let keys = || K::symbols(["a", "b"]);
        let values = || vector(VectorData::Int(vec![2, 3]));
        check(K::dict(keys(), values()), "`a`b!2 3i");
        check(
            K::dict(
                K::symbols(["x", "y"]),
                K::list(vec![K::symbol("a"), K::long(2)]),
            ),
            "`x`y!(`a;2)",
        );
        // A one-item key vector is not a noun: q reads `,`a!1` as `,(`a!1)`.
        check(
            K::dict(K::symbols(["a"]), vector(VectorData::Long(vec![1]))),
            "(,`a)!,1",
        );
        check(K::dict(K::list(vec![]), K::list(vec![])), "()!()");
        check(
            K::dict(vector(VectorData::Int(vec![])), K::list(vec![])),
            "(`int$())!()",
        );
        check(
            K::dict(
                K::symbols(["a", "b"]),
                K::dict(K::symbols(["c"]), K::list(vec![K::long(1)])),
            ),
            "`a`b!(,`c)!,1",
        );
        check(
            K::dict(K::dict(K::symbols(["a", "b"]), values()), values()),
            "(`a`b!2 3i)!2 3i",
        );
        check(
            K::dict(vector(VectorData::Date(vec![0, INF_I32 - 1])), values()),
            "(`date$0 2147483646i)!2 3i",
        );
        check(
            K::dict(vector(VectorData::Date(vec![0, 1])), values()),
            "2000.01.01 2000.01.02!2 3i",
        );
        check(
            K::dict(K::symbols(["a b", "c"]), values()),
            "(`$(\"a b\";,\"c\"))!2 3i",
        );
        check(
            K::dict(
                with_attr(Attr::Unique, VectorData::Long(vec![1, 2])),
                values(),
            ),
            "(`u#1 2)!2 3i",
        );
        // Sorted: the keys carry `s# on the wire, and q shows it once.
        check(
            K::Dict(Dict {
                sorted: true,
                keys: Box::new(with_attr(
                    Attr::Sorted,
                    VectorData::Symbol(["a", "b"].into_iter().collect()),
                )),
                values: Box::new(values()),
            }),
            "`s#`a`b!2 3i",
        );
    }

    #[test]
    fn tables() {
        let table = K::table(
            ["a", "b"],
            vec![
                vector(VectorData::Int(vec![2])),
                vector(VectorData::Int(vec![3])),
            ],
        );
        check(table.clone(), "+`a`b!(,2i;,3i)");
        check(
            K::Table(Table {
                attr: Attr::Sorted,
                columns: Box::new(K::symbols(["a", "b"])),
                values: Box::new(K::list(vec![
                    with_attr(Attr::Parted, VectorData::Int(vec![2])),
                    vector(VectorData::Int(vec![3])),
                ])),
            }),
            "`s#+`a`b!(`p#,2i;,3i)",
        );
        check(
            K::table(
                ["abc", "def"],
                vec![
                    vector(VectorData::Long(vec![1, 2, 3])),
                    vector(VectorData::Long(vec![4, 5, 6])),
                ],
            ),
            "+`abc`def!(1 2 3;4 5 6)",
        );
        check(
            K::table(
                ["name", "iq"],
                vec![
                    vector(VectorData::Symbol(Symbols::new())),
                    vector(VectorData::Int(vec![])),
                ],
            ),
            "+`name`iq!(`symbol$();`int$())",
        );
        check(
            K::table(["name", "iq"], vec![K::list(vec![]), K::list(vec![])]),
            "+`name`iq!(();())",
        );
        // A splayed table reference.
        check(
            K::Table(Table {
                attr: Attr::None,
                columns: Box::new(K::symbols(["a"])),
                values: Box::new(K::symbol(":test/")),
            }),
            "+(,`a)!`:test/",
        );
        // Keyed tables: dictionaries of tables.
        let key = K::table(["a"], vec![vector(VectorData::Long(vec![1]))]);
        let value = K::table(["b"], vec![vector(VectorData::Long(vec![2]))]);
        check(
            K::dict(key.clone(), value.clone()),
            "(+(,`a)!,,1)!+(,`b)!,,2",
        );
        let sorted_key = match key {
            K::Table(t) => K::Table(Table {
                attr: Attr::Sorted,
                ..t
            }),
            other => other,
        };
        check(
            K::Dict(Dict {
                sorted: true,
                keys: Box::new(sorted_key),
                values: Box::new(value),
            }),
            "`s#(+(,`a)!,,1)!+(,`b)!,,2",
        );
        // Tables nest in lists.
        check(K::list(vec![table, K::Null]), "(+`a`b!(,2i;,3i);::)");
    }

    #[test]
    fn functions() {
        let f = |function| K::Function(function);
        let boxed = |k: K| Box::new(k);
        check(lambda("{x+y}"), "{x+y}");
        check(
            f(Function::Lambda {
                context: b"d".to_vec(),
                source: boxed(K::string("{x+y}")),
            }),
            "{x+y}",
        );
        check(f(Function::Unary(15)), "~:");
        check(f(Function::Unary(0)), "::");
        check(f(Function::Unary(41)), "<unary 41>");
        check(f(Function::Binary(5)), "&");
        check(f(Function::Binary(1)), "+");
        check(f(Function::Binary(19)), ".");
        check(f(Function::Binary(28)), "<binary 28>");
        check(f(Function::Ternary(0)), "<ternary 0>");
        check(
            f(Function::Projection(vec![lambda("{x+y}"), K::long(3)])),
            "{x+y}[3]",
        );
        check(
            f(Function::Projection(vec![
                lambda("{x+y+z}"),
                K::long(3),
                K::string("ab"),
            ])),
            "{x+y+z}[3;\"ab\"]",
        );
        check(
            f(Function::Projection(vec![
                f(Function::Binary(16)),
                Atom::Int(-15).into(),
            ])),
            "![-15i]",
        );
        check(
            f(Function::Composition(vec![
                f(Function::Unary(15)),
                lambda("{x}"),
            ])),
            "'[~:;{x}]",
        );
        check(f(Function::Each(boxed(lambda("{x}")))), "{x}'");
        check(f(Function::Over(boxed(f(Function::Binary(12))))), ",/");
        check(f(Function::Scan(boxed(f(Function::Binary(1))))), "+\\");
        check(f(Function::EachPrior(boxed(f(Function::Binary(0))))), ":':");
        check(
            f(Function::EachRight(boxed(f(Function::Binary(12))))),
            ",/:",
        );
        check(
            f(Function::EachLeft(boxed(f(Function::Binary(12))))),
            ",\\:",
        );
        check(
            f(Function::Each(boxed(f(Function::Over(boxed(f(
                Function::Binary(1),
            ))))))),
            "+/'",
        );
        check(
            f(Function::Each(boxed(f(Function::Composition(vec![
                f(Function::Unary(15)),
                f(Function::Binary(1)),
            ]))))),
            "('[~:;+])'",
        );
        check(
            f(Function::Over(boxed(K::dict(
                K::symbols(["a", "b"]),
                K::symbols(["b", "a"]),
            )))),
            "(`a`b!`b`a)/",
        );
    }

    #[test]
    fn null_and_errors() {
        check(K::Null, "::");
        check(K::error("type"), "'type");
        check(K::error("access"), "'access");
    }
}
