//! A reader for q data literals: the text of a query such as `` `a`b!1 2 `` becomes the value q
//! would return for it, without evaluating any q.
//!
//! It reads what a client library's test suite sends to check its decoder: atoms of every type
//! with their nulls and infinities (`0N`, `0Nh`, `0n`, `0Wp`, `-0w`...), type suffixes (`1i`,
//! `2h`, `3e`, `4f`, `1b`, `0x2a`), temporal literals (`2001.01.01`, `2001.01m`,
//! `2001.01.01D00:00:00.000000000`, `2001.01.01T00:00:00.000`, `0D05:36:57.600`, `12:01`,
//! `12:05:00`, `12:04:59.123`), GUIDs (`"G"$"..."`, or bare as `qgate decode` prints them),
//! strings and chars with escapes, symbols, vectors (`1 2 3`, `101b`, `0x0102`, `` `a`b ``),
//! `enlist` and `,`, dictionaries (`!`), `flip` and `+`, attributes (`` `s# ``), casts of empty
//! lists and raw numbers (`` `int$() ``, `` `date$0 1 ``, `` `$"a b" ``), `::`, the empty query,
//! and general lists (`(1;`a;"x")`, which collapse to a vector when every item is an atom of one
//! type, as in q).
//!
//! Anything else is an error naming what could not be read.

use qgate_plugin_sdk::{Atom, Attr, K, VectorData, ipc::Dict, ipc::List, ipc::Table, ipc::Vector};

/// The deepest nesting of parentheses and prefixes read, so that a hostile query cannot
/// overflow the plugin's stack; the codec's own limit (`qgate_ipc::MAX_DEPTH`) is the same.
const MAX_DEPTH: usize = 100;

/// Reads `text` as one q data literal; empty text is the generic null `::`.
///
/// # Errors
///
/// A message saying what could not be read and where.
pub fn parse(text: &str) -> Result<K, String> {
    let mut parser = Parser {
        s: text.as_bytes(),
        pos: 0,
        depth: 0,
    };
    let value = parser.expr()?.unwrap_or(K::Null);
    parser.skip_ws();
    if parser.pos < parser.s.len() {
        return Err(parser.unexpected());
    }
    Ok(value)
}

/// The null and infinities of each type, as q stores them.
const NULL_I16: i16 = i16::MIN;
const NULL_I32: i32 = i32::MIN;
const NULL_I64: i64 = i64::MIN;

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<u8> {
        self.s.get(self.pos + offset).copied()
    }

    fn rest(&self) -> &[u8] {
        self.s.get(self.pos..).unwrap_or_default()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn unexpected(&self) -> String {
        let rest = String::from_utf8_lossy(self.rest());
        let shown: String = rest.chars().take(20).collect();
        format!("nyi: cannot read `{shown}` at {}", self.pos)
    }

    /// Whether the keyword `word` starts here, not followed by a name character.
    fn keyword(&self, word: &str) -> bool {
        self.rest().starts_with(word.as_bytes())
            && !self
                .peek_at(word.len())
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.')
    }

    /// An expression, or `None` when there is none before `)`, `;` or the end.
    fn expr(&mut self) -> Result<Option<K>, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("nyi: nested too deeply".to_owned());
        }
        let result = self.expr_inner();
        self.depth -= 1;
        result
    }

    fn required(&mut self) -> Result<K, String> {
        match self.expr()? {
            Some(value) => Ok(value),
            None => Err(format!("nyi: a value is missing at {}", self.pos)),
        }
    }

    fn expr_inner(&mut self) -> Result<Option<K>, String> {
        self.skip_ws();
        let Some(c) = self.peek() else {
            return Ok(None);
        };
        if c == b')' || c == b';' {
            return Ok(None);
        }
        if self.keyword("enlist") {
            self.pos += "enlist".len();
            return Ok(Some(enlist(self.required()?)));
        }
        if self.keyword("flip") {
            self.pos += "flip".len();
            return flip(self.required()?).map(Some);
        }
        if c == b',' {
            self.pos += 1;
            return Ok(Some(enlist(self.required()?)));
        }
        if c == b'+' {
            self.pos += 1;
            return flip(self.required()?).map(Some);
        }
        if c == b'`'
            && matches!(self.peek_at(1), Some(b's' | b'u' | b'p' | b'g'))
            && self.peek_at(2) == Some(b'#')
        {
            let attr = match self.peek_at(1) {
                Some(b's') => Attr::Sorted,
                Some(b'u') => Attr::Unique,
                Some(b'p') => Attr::Parted,
                _ => Attr::Grouped,
            };
            self.pos += 3;
            return with_attr(attr, self.required()?).map(Some);
        }
        let noun = self.noun()?;
        self.skip_ws();
        match self.peek() {
            Some(b'!') => {
                self.pos += 1;
                let values = self.required()?;
                dict(noun, values).map(Some)
            }
            Some(b'$') => {
                self.pos += 1;
                let value = self.required()?;
                cast(&noun, value).map(Some)
            }
            _ => Ok(Some(noun)),
        }
    }

    fn noun(&mut self) -> Result<K, String> {
        let Some(c) = self.peek() else {
            return Err(self.unexpected());
        };
        if self.rest().starts_with(b"::") {
            self.pos += 2;
            return Ok(K::Null);
        }
        match c {
            b'(' => self.list(),
            b'`' => Ok(self.symbols()),
            b'"' => self.string(),
            b'0' if self.peek_at(1) == Some(b'x') => self.bytes(),
            _ if self.starts_number() => self.numbers(),
            _ => Err(self.unexpected()),
        }
    }

    fn list(&mut self) -> Result<K, String> {
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            let item = self.expr()?;
            self.skip_ws();
            match self.peek() {
                Some(b';') => {
                    self.pos += 1;
                    items.push(item.unwrap_or(K::Null));
                }
                Some(b')') => {
                    self.pos += 1;
                    match item {
                        Some(item) => items.push(item),
                        None if items.is_empty() => return Ok(K::list(Vec::new())),
                        None => items.push(K::Null),
                    }
                    break;
                }
                _ => return Err(self.unexpected()),
            }
        }
        if items.len() == 1 {
            return Ok(items.pop().unwrap_or(K::Null));
        }
        Ok(collapse(items))
    }

    fn symbols(&mut self) -> K {
        let mut names = Vec::new();
        while self.peek() == Some(b'`') {
            self.pos += 1;
            let start = self.pos;
            while self.peek().is_some_and(|c| {
                c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'/')
            }) {
                self.pos += 1;
            }
            names.push(self.s[start..self.pos].to_vec());
        }
        if names.len() == 1 {
            K::symbol(names.pop().unwrap_or_default())
        } else {
            K::symbols(names)
        }
    }

    fn string(&mut self) -> Result<K, String> {
        let start = self.pos;
        self.pos += 1;
        let mut text = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                self.pos = start;
                return Err("nyi: a string is not closed".to_owned());
            };
            self.pos += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let Some(e) = self.peek() else { continue };
                    self.pos += 1;
                    text.push(match e {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'0'..=b'7' => {
                            let mut value = u32::from(e - b'0');
                            for _ in 0..2 {
                                if let Some(d @ b'0'..=b'7') = self.peek() {
                                    value = value * 8 + u32::from(d - b'0');
                                    self.pos += 1;
                                }
                            }
                            u8::try_from(value).map_err(|_| "nyi: bad octal escape".to_owned())?
                        }
                        other => other,
                    });
                }
                other => text.push(other),
            }
        }
        Ok(if text.len() == 1 {
            K::Atom(Atom::Char(text[0]))
        } else {
            K::string(text)
        })
    }

    fn bytes(&mut self) -> Result<K, String> {
        self.pos += 2;
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
            self.pos += 1;
        }
        let hex = &self.s[start..self.pos];
        let mut bytes = Vec::new();
        // An odd count reads a leading 0, as q does (`0x1` is `0x01`).
        let padded: Vec<u8> = if hex.len() % 2 == 1 {
            std::iter::once(b'0').chain(hex.iter().copied()).collect()
        } else {
            hex.to_vec()
        };
        for pair in padded.chunks(2) {
            let text = std::str::from_utf8(pair).map_err(|_| self.unexpected())?;
            bytes.push(u8::from_str_radix(text, 16).map_err(|_| self.unexpected())?);
        }
        Ok(if bytes.len() == 1 {
            K::Atom(Atom::Byte(bytes[0]))
        } else {
            K::vector(VectorData::Byte(bytes))
        })
    }

    fn starts_number(&self) -> bool {
        let digit = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_digit());
        match self.peek() {
            Some(c) if c.is_ascii_digit() => true,
            Some(b'-') => {
                digit(self.peek_at(1)) || (self.peek_at(1) == Some(b'.') && digit(self.peek_at(2)))
            }
            Some(b'.') => digit(self.peek_at(1)),
            Some(c) if c.is_ascii_hexdigit() => is_guid(self.token_at(self.pos)),
            _ => false,
        }
    }

    /// The run of non-space, non-punctuation bytes at `pos`.
    fn token_at(&self, pos: usize) -> &[u8] {
        let rest = self.s.get(pos..).unwrap_or_default();
        let end = rest
            .iter()
            .position(|&c| c.is_ascii_whitespace() || b"();!$`\"".contains(&c))
            .unwrap_or(rest.len());
        &rest[..end]
    }

    /// A run of numeric tokens separated by spaces: an atom, or a vector.
    fn numbers(&mut self) -> Result<K, String> {
        let mut tokens = Vec::new();
        loop {
            let token = self.token_at(self.pos).to_vec();
            if token.is_empty() {
                return Err(self.unexpected());
            }
            self.pos += token.len();
            tokens.push(String::from_utf8(token).map_err(|_| self.unexpected())?);
            let save = self.pos;
            self.skip_ws();
            if self.pos > save && self.starts_number() {
                continue;
            }
            self.pos = save;
            break;
        }
        numeric(&tokens)
    }
}

/// Whether a token is a GUID in its textual form (8-4-4-4-12 hex digits).
fn is_guid(token: &[u8]) -> bool {
    token.len() == 36
        && token.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn guid(token: &str) -> Result<[u8; 16], String> {
    let hex: Vec<u8> = token.bytes().filter(|&c| c != b'-').collect();
    if !is_guid(token.as_bytes()) {
        return Err(format!("nyi: `{token}` is not a guid"));
    }
    let mut out = [0; 16];
    for (slot, pair) in out.iter_mut().zip(hex.chunks(2)) {
        let text = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
        *slot = u8::from_str_radix(text, 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// The type a token's suffix letter names (a vector type code).
fn suffix_type(letter: u8) -> Option<i8> {
    Some(match letter {
        b'b' => 1,
        b'g' => 2,
        b'h' => 5,
        b'i' => 6,
        b'j' => 7,
        b'e' => 8,
        b'f' => 9,
        b'p' => 12,
        b'm' => 13,
        b'd' => 14,
        b'z' => 15,
        b'n' => 16,
        b'u' => 17,
        b'v' => 18,
        b't' => 19,
        _ => return None,
    })
}

/// The untyped nulls and infinities, which take the type of the vector they are in.
const SPECIALS: [&str; 6] = ["0N", "0n", "0W", "0w", "-0W", "-0w"];

/// Splits a token into its body and the type its suffix names.
fn split_suffix(token: &str) -> (&str, Option<i8>) {
    if SPECIALS.contains(&token) {
        return (token, None);
    }
    let bytes = token.as_bytes();
    match bytes.last() {
        Some(&last) if bytes.len() > 1 && last.is_ascii_lowercase() && !is_guid(bytes) => {
            match suffix_type(last) {
                Some(code) => (&token[..token.len() - 1], Some(code)),
                None => (token, None),
            }
        }
        _ => (token, None),
    }
}

/// The type a token without a suffix has by its shape; `None` for a null or infinity that takes
/// the vector's type, 7 (long) for a plain integer.
fn shape_type(token: &str) -> Option<i8> {
    let t = token.strip_prefix('-').unwrap_or(token);
    if matches!(t, "0N" | "0W") {
        return None;
    }
    if matches!(t, "0n" | "0w") {
        return Some(9);
    }
    if is_guid(token.as_bytes()) {
        return Some(2);
    }
    if let Some(d) = t.find('D') {
        return Some(if t[..d].contains('.') { 12 } else { 16 });
    }
    if t.contains('T') {
        return Some(15);
    }
    if t.contains(':') {
        // `hh:mm:ss.fff` is a time; more than three decimals make a timespan, as in q
        // (`00:00:00.000000000` is type -16).
        let decimals = t.split_once('.').map_or(0, |(_, fraction)| fraction.len());
        return Some(match t.matches(':').count() {
            1 => 17,
            _ if decimals > 3 => 16,
            _ if t.contains('.') => 19,
            _ => 18,
        });
    }
    if t.matches('.').count() == 2 {
        return Some(14);
    }
    if t.contains('.') || t.contains('e') {
        return Some(9);
    }
    Some(7)
}

/// A run of numeric tokens as q reads it: the last token's suffix types every token, otherwise
/// the tokens' shapes agree on a type (integers widen to floats).
fn numeric(tokens: &[String]) -> Result<K, String> {
    let last = tokens.last().map(String::as_str).unwrap_or_default();
    let (last_body, suffix) = split_suffix(last);
    // `101b`: a boolean vector in one token.
    if tokens.len() == 1 && suffix == Some(1) && last_body.len() > 1 {
        let bits: Result<Vec<bool>, String> = last_body
            .bytes()
            .map(|c| match c {
                b'0' => Ok(false),
                b'1' => Ok(true),
                _ => Err(format!("nyi: `{last}` is not a boolean")),
            })
            .collect();
        return Ok(K::vector(VectorData::Boolean(bits?)));
    }
    let bodies: Vec<&str> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if i + 1 == tokens.len() {
                last_body
            } else {
                t.as_str()
            }
        })
        .collect();
    let code = match suffix {
        Some(code) => code,
        None => {
            let mut code = None;
            for body in &bodies {
                let Some(shape) = shape_type(body) else {
                    continue;
                };
                code = Some(match code {
                    None => shape,
                    Some(c) if c == shape => c,
                    Some(7 | 9) if matches!(shape, 7 | 9) => 9,
                    Some(_) => return Err(format!("type: mixed literals `{}`", tokens.join(" "))),
                });
            }
            code.unwrap_or(7)
        }
    };
    let atoms: Vec<Atom> = bodies
        .iter()
        .map(|body| atom(code, body))
        .collect::<Result<_, _>>()?;
    if atoms.len() == 1 {
        return Ok(K::Atom(atoms.into_iter().next().unwrap_or(Atom::Long(0))));
    }
    vector(code, atoms).map(K::vector)
}

/// Reads one token's body as an atom of the type `code`.
fn atom(code: i8, body: &str) -> Result<Atom, String> {
    let bad = || {
        format!(
            "nyi: cannot read `{body}` as {}",
            qgate_plugin_sdk::q::type_name(-code)
        )
    };
    let special = match body {
        "0N" | "0n" => Some(Special::Null),
        "0W" | "0w" => Some(Special::Inf),
        "-0W" | "-0w" => Some(Special::NegInf),
        _ => None,
    };
    if let Some(special) = special {
        return special_atom(code, special).ok_or_else(bad);
    }
    let int = || body.parse::<i64>().map_err(|_| bad());
    let narrow = |x: i64| i32::try_from(x).map_err(|_| bad());
    Ok(match code {
        1 => match body {
            "0" => Atom::Boolean(false),
            "1" => Atom::Boolean(true),
            _ => return Err(bad()),
        },
        2 => Atom::Guid(guid(body)?),
        5 => Atom::Short(i16::try_from(int()?).map_err(|_| bad())?),
        6 => Atom::Int(narrow(int()?)?),
        7 => Atom::Long(int()?),
        8 => Atom::Real(body.parse::<f32>().map_err(|_| bad())?),
        9 => Atom::Float(body.parse::<f64>().map_err(|_| bad())?),
        12 => Atom::Timestamp(timestamp(body).ok_or_else(bad)?),
        13 => Atom::Month(month(body).ok_or_else(bad)?),
        14 => Atom::Date(date(body).ok_or_else(bad)?),
        15 => Atom::Datetime(datetime(body).ok_or_else(bad)?),
        16 => Atom::Timespan(timespan(body).ok_or_else(bad)?),
        17 => Atom::Minute(narrow(clock(body, 1).ok_or_else(bad)? / 60_000_000_000)?),
        18 => Atom::Second(narrow(clock(body, 2).ok_or_else(bad)? / 1_000_000_000)?),
        19 => Atom::Time(narrow(clock(body, 3).ok_or_else(bad)? / 1_000_000)?),
        _ => return Err(bad()),
    })
}

#[derive(Clone, Copy)]
enum Special {
    Null,
    Inf,
    NegInf,
}

fn special_atom(code: i8, special: Special) -> Option<Atom> {
    let i16v = match special {
        Special::Null => NULL_I16,
        Special::Inf => i16::MAX,
        Special::NegInf => -i16::MAX,
    };
    let i32v = match special {
        Special::Null => NULL_I32,
        Special::Inf => i32::MAX,
        Special::NegInf => -i32::MAX,
    };
    let i64v = match special {
        Special::Null => NULL_I64,
        Special::Inf => i64::MAX,
        Special::NegInf => -i64::MAX,
    };
    let f64v = match special {
        Special::Null => f64::NAN,
        Special::Inf => f64::INFINITY,
        Special::NegInf => f64::NEG_INFINITY,
    };
    Some(match code {
        2 if matches!(special, Special::Null) => Atom::Guid([0; 16]),
        5 => Atom::Short(i16v),
        6 => Atom::Int(i32v),
        7 => Atom::Long(i64v),
        #[expect(clippy::cast_possible_truncation, reason = "nulls and infinities only")]
        8 => Atom::Real(f64v as f32),
        9 => Atom::Float(f64v),
        12 => Atom::Timestamp(i64v),
        13 => Atom::Month(i32v),
        14 => Atom::Date(i32v),
        15 => Atom::Datetime(f64v),
        16 => Atom::Timespan(i64v),
        17 => Atom::Minute(i32v),
        18 => Atom::Second(i32v),
        19 => Atom::Time(i32v),
        _ => return None,
    })
}

/// Days from 1970.01.01 to a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// q's date for `YYYY.MM.DD`: days since 2000.01.01.
fn date(text: &str) -> Option<i32> {
    let mut parts = text.splitn(3, '.');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (i64, i64, i64) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    if !(1..=12).contains(&m) || d < 1 {
        return None;
    }
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    if d > days_from_civil(ny, nm, 1) - days_from_civil(y, m, 1) {
        return None;
    }
    i32::try_from(days_from_civil(y, m, d) - days_from_civil(2000, 1, 1)).ok()
}

/// q's month for `YYYY.MM`: months since 2000.01.
fn month(text: &str) -> Option<i32> {
    let (y, m) = text.split_once('.')?;
    if y.len() != 4 || m.len() != 2 {
        return None;
    }
    let (y, m): (i32, i32) = (y.parse().ok()?, m.parse().ok()?);
    (1..=12).contains(&m).then(|| (y - 2000) * 12 + m - 1)
}

/// Nanoseconds for `[-]hh:mm[:ss[.fffffffff]]` with exactly `fields` parts when `fields` is 1 or
/// 2 (`hh:mm`, `hh:mm:ss`), and `hh:mm:ss.fff` when it is 3; hours may pass 24.
fn clock(text: &str, fields: usize) -> Option<i64> {
    let (negative, t) = match text.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, text),
    };
    let (main, fraction) = match t.split_once('.') {
        Some((main, fraction)) => (main, Some(fraction)),
        None => (t, None),
    };
    let parts: Vec<&str> = main.split(':').collect();
    let wanted = if fields == 3 { 3 } else { fields + 1 };
    if parts.len() != wanted || (fraction.is_some() && fields < 3) {
        return None;
    }
    let mut nanos: i64 = 0;
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() || !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let value: i64 = part.parse().ok()?;
        if i > 0 && (part.len() != 2 || value >= 60) {
            return None;
        }
        let unit = [3_600_000_000_000, 60_000_000_000, 1_000_000_000][i];
        nanos = nanos.checked_add(value.checked_mul(unit)?)?;
    }
    if let Some(fraction) = fraction {
        nanos = nanos.checked_add(fraction_nanos(fraction)?)?;
    }
    Some(if negative { -nanos } else { nanos })
}

/// Nanoseconds for the digits after a decimal point, at most 9.
fn fraction_nanos(digits: &str) -> Option<i64> {
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let value: i64 = digits.parse().ok()?;
    Some(value * 10_i64.pow(u32::try_from(9 - digits.len()).ok()?))
}

const NANOS_PER_DAY: i64 = 86_400_000_000_000;

/// A time of day after a date or a day count: `hh:mm[:ss[.f]]`, or nothing.
fn time_of_day(text: &str) -> Option<i64> {
    if text.is_empty() {
        return Some(0);
    }
    let (main, fraction) = match text.split_once('.') {
        Some((main, fraction)) => (main, Some(fraction)),
        None => (text, None),
    };
    let fields = main.matches(':').count();
    let base = clock(main, fields.max(1))?;
    match fraction {
        Some(fraction) => base.checked_add(fraction_nanos(fraction)?),
        None => Some(base),
    }
}

/// q's timestamp for `YYYY.MM.DDDhh:mm:ss.fffffffff`: nanoseconds since 2000.01.01.
fn timestamp(text: &str) -> Option<i64> {
    let (day, time) = text.split_once('D').unwrap_or((text, ""));
    i64::from(date(day)?)
        .checked_mul(NANOS_PER_DAY)?
        .checked_add(time_of_day(time)?)
}

/// q's timespan for `[-]NDhh:mm:ss.fffffffff` (or a time of day alone): nanoseconds.
fn timespan(text: &str) -> Option<i64> {
    let (negative, t) = match text.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, text),
    };
    let nanos = match t.split_once('D') {
        Some((days, time)) => days
            .parse::<i64>()
            .ok()?
            .checked_mul(NANOS_PER_DAY)?
            .checked_add(time_of_day(time)?)?,
        None if t.contains(':') => time_of_day(t)?,
        None => t.parse().ok()?,
    };
    Some(if negative { -nanos } else { nanos })
}

/// q's datetime for `YYYY.MM.DDThh:mm:ss.fff`: fractional days since 2000.01.01.
fn datetime(text: &str) -> Option<f64> {
    let (day, time) = text.split_once('T').unwrap_or((text, ""));
    let nanos = time_of_day(time)?;
    #[expect(
        clippy::cast_precision_loss,
        reason = "datetimes are milliseconds in a double"
    )]
    let fraction = (nanos / 1_000_000) as f64 / 86_400_000.0;
    Some(f64::from(date(day)?) + fraction)
}

/// The vector of atoms all of type `code`.
fn vector(code: i8, atoms: Vec<Atom>) -> Result<VectorData, String> {
    macro_rules! collect {
        ($variant:ident) => {
            VectorData::$variant(
                atoms
                    .into_iter()
                    .map(|a| match a {
                        Atom::$variant(x) => Ok(x),
                        _ => Err("type: mixed atoms".to_owned()),
                    })
                    .collect::<Result<_, _>>()?,
            )
        };
    }
    Ok(match code {
        1 => collect!(Boolean),
        2 => collect!(Guid),
        4 => collect!(Byte),
        5 => collect!(Short),
        6 => collect!(Int),
        7 => collect!(Long),
        8 => collect!(Real),
        9 => collect!(Float),
        10 => collect!(Char),
        11 => VectorData::Symbol(
            atoms
                .iter()
                .map(|a| match a {
                    Atom::Symbol(name) => Ok(name.as_slice()),
                    _ => Err("type: mixed atoms".to_owned()),
                })
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .collect(),
        ),
        12 => collect!(Timestamp),
        13 => collect!(Month),
        14 => collect!(Date),
        15 => collect!(Datetime),
        16 => collect!(Timespan),
        17 => collect!(Minute),
        18 => collect!(Second),
        19 => collect!(Time),
        _ => return Err("type: not a vector type".to_owned()),
    })
}

/// A general list, collapsed to a vector when every item is an atom of one type, as q does.
fn collapse(items: Vec<K>) -> K {
    let code = match items.first() {
        Some(K::Atom(first)) => first.type_code(),
        _ => return K::list(items),
    };
    if !items
        .iter()
        .all(|item| matches!(item, K::Atom(a) if a.type_code() == code))
    {
        return K::list(items);
    }
    let atoms: Vec<Atom> = items
        .iter()
        .filter_map(|item| match item {
            K::Atom(a) => Some(a.clone()),
            _ => None,
        })
        .collect();
    match vector(-code, atoms) {
        Ok(data) => K::vector(data),
        Err(_) => K::list(items),
    }
}

/// `enlist x`: a one-item vector for an atom, a one-item general list otherwise.
fn enlist(value: K) -> K {
    match value {
        K::Atom(atom) => match vector(-atom.type_code(), vec![atom.clone()]) {
            Ok(data) => K::vector(data),
            Err(_) => K::list(vec![K::Atom(atom)]),
        },
        other => K::list(vec![other]),
    }
}

/// `keys!values`.
fn dict(keys: K, values: K) -> Result<K, String> {
    if keys.len() != values.len() && !matches!(keys, K::Atom(_)) {
        return Err("length: keys and values differ in count".to_owned());
    }
    if let (K::Table(_), K::Table(_)) = (&keys, &values) {
        return Ok(K::dict(keys, values));
    }
    if matches!(keys, K::Atom(_)) || matches!(values, K::Atom(_)) {
        return Err("type: a dictionary needs lists".to_owned());
    }
    Ok(K::dict(keys, values))
}

/// `flip x`: a dictionary of symbols to equal-length columns becomes a table, and back.
fn flip(value: K) -> Result<K, String> {
    match value {
        K::Dict(Dict { keys, values, .. }) => {
            if !matches!(
                *keys,
                K::Vector(Vector {
                    data: VectorData::Symbol(_),
                    ..
                })
            ) {
                return Err("type: flip needs symbol keys".to_owned());
            }
            let columns = match *values {
                K::List(list) => list.items,
                K::Vector(v) => (0..v.len())
                    .filter_map(|i| v.data.atom(i).map(|a| enlist(K::Atom(a))))
                    .collect(),
                _ => return Err("type: flip needs lists".to_owned()),
            };
            let rows = columns.first().map(K::len);
            if columns.iter().any(|c| {
                matches!(c, K::Atom(_) | K::Dict(_) | K::Table(_)) || Some(c.len()) != rows
            }) {
                return Err("length: columns differ in count".to_owned());
            }
            Ok(K::Table(Table {
                attr: Attr::None,
                columns: keys,
                values: Box::new(K::list(columns)),
            }))
        }
        K::Table(table) => Ok(K::Dict(Dict {
            sorted: false,
            keys: table.columns,
            values: table.values,
        })),
        _ => Err("rank: flip needs a dictionary or a table".to_owned()),
    }
}

/// `` `s#x `` and the other attributes.
fn with_attr(attr: Attr, value: K) -> Result<K, String> {
    Ok(match value {
        K::Vector(mut v) => {
            v.attr = attr;
            K::Vector(v)
        }
        K::Table(mut t) => {
            t.attr = attr;
            K::Table(t)
        }
        K::Dict(mut d) if attr == Attr::Sorted => {
            d.sorted = true;
            if let K::Vector(keys) = &mut *d.keys {
                keys.attr = Attr::Sorted;
            }
            K::Dict(d)
        }
        K::List(List { items, .. }) if items.is_empty() => K::List(List { attr, items }),
        _ => return Err("type: attributes apply to lists, dictionaries and tables".to_owned()),
    })
}

/// `` `type$x `` and `"G"$"..."`: empty typed vectors, raw numbers as temporals, text as symbols
/// or GUIDs.
fn cast(target: &K, value: K) -> Result<K, String> {
    let name = match target {
        K::Atom(Atom::Symbol(name)) => String::from_utf8_lossy(name).into_owned(),
        K::Atom(Atom::Char(c)) => match c {
            b'G' => "guid".to_owned(),
            b'S' => String::new(),
            _ => return Err(format!("nyi: cast \"{}\"$", char::from(*c))),
        },
        _ => return Err("nyi: cast".to_owned()),
    };
    if name.is_empty() {
        return to_symbols(value);
    }
    let code = (1..=19)
        .find(|&c| qgate_plugin_sdk::q::type_name(-c) == name)
        .ok_or_else(|| format!("nyi: cast to `{name}"))?;
    if name == "guid"
        && let Some(text) = value.as_text()
    {
        return Ok(K::Atom(Atom::Guid(guid(&String::from_utf8_lossy(text))?)));
    }
    if let K::List(list) = &value
        && list.items.is_empty()
    {
        return vector(code, Vec::new()).map(K::vector);
    }
    // Raw numbers: q stores temporals as counts, so the cast keeps the number.
    let raw = |k: &K| -> Result<Atom, String> {
        let bad = || format!("type: cannot cast {k} to {name}");
        let Some(Atom::Long(x) | Atom::Timestamp(x) | Atom::Timespan(x)) = as_long(k) else {
            if let K::Atom(Atom::Float(x)) = k {
                return if code == 15 {
                    Ok(Atom::Datetime(*x))
                } else {
                    Err(bad())
                };
            }
            return Err(bad());
        };
        let narrow = |x: i64| i32::try_from(x).map_err(|_| bad());
        Ok(match code {
            5 => Atom::Short(i16::try_from(x).map_err(|_| bad())?),
            6 => Atom::Int(narrow(x)?),
            7 => Atom::Long(x),
            #[expect(clippy::cast_precision_loss, reason = "q's own conversion")]
            9 => Atom::Float(x as f64),
            12 => Atom::Timestamp(x),
            13 => Atom::Month(narrow(x)?),
            14 => Atom::Date(narrow(x)?),
            #[expect(clippy::cast_precision_loss, reason = "q's own conversion")]
            15 => Atom::Datetime(x as f64),
            16 => Atom::Timespan(x),
            17 => Atom::Minute(narrow(x)?),
            18 => Atom::Second(narrow(x)?),
            19 => Atom::Time(narrow(x)?),
            _ => return Err(bad()),
        })
    };
    match &value {
        K::Atom(_) => raw(&value).map(K::Atom),
        K::Vector(v) => {
            let atoms = (0..v.len())
                .filter_map(|i| v.data.atom(i))
                .map(|a| raw(&K::Atom(a)))
                .collect::<Result<Vec<_>, _>>()?;
            vector(code, atoms).map(K::vector)
        }
        _ => Err(format!("type: cannot cast to {name}")),
    }
}

/// An integer atom widened to a long, keeping nulls and infinities.
fn as_long(k: &K) -> Option<Atom> {
    Some(match k {
        K::Atom(Atom::Short(x)) => Atom::Long(match *x {
            NULL_I16 => NULL_I64,
            i16::MAX => i64::MAX,
            x if x == -i16::MAX => -i64::MAX,
            x => x.into(),
        }),
        K::Atom(Atom::Int(x)) => Atom::Long(match *x {
            NULL_I32 => NULL_I64,
            i32::MAX => i64::MAX,
            x if x == -i32::MAX => -i64::MAX,
            x => x.into(),
        }),
        K::Atom(Atom::Long(x)) => Atom::Long(*x),
        _ => return None,
    })
}

/// `` `$x ``: a string to a symbol, a list of strings to a symbol vector.
fn to_symbols(value: K) -> Result<K, String> {
    if let Some(text) = value.as_text() {
        return Ok(K::symbol(text));
    }
    match value {
        K::List(list) => {
            let names = list
                .items
                .iter()
                .map(|item| match item {
                    K::Atom(Atom::Char(c)) => Ok(vec![*c]),
                    other => other
                        .as_text()
                        .map(<[u8]>::to_vec)
                        .ok_or_else(|| "type: `$ needs strings".to_owned()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(K::symbols(names))
        }
        K::Vector(Vector {
            data: VectorData::Char(_),
            ..
        }) => Err("type: `$ needs strings".to_owned()),
        _ => Err("type: `$ needs strings".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use qgate_plugin_sdk::ipc::encode;

    use super::*;

    /// Compares by encoding, so that NaN nulls compare equal.
    fn bytes(k: &K) -> Vec<u8> {
        let mut out = Vec::new();
        encode(k, &mut out).unwrap_or_else(|e| panic!("{e}"));
        out
    }

    fn check(text: &str, expect: K) {
        match parse(text) {
            Ok(actual) => assert_eq!(bytes(&actual), bytes(&expect), "{text}: got {actual}"),
            Err(err) => panic!("{text}: {err}"),
        }
    }

    fn long(x: i64) -> K {
        K::long(x)
    }

    #[test]
    fn atoms_of_every_type() {
        check("1b", K::Atom(Atom::Boolean(true)));
        check("0x2a", K::Atom(Atom::Byte(0x2a)));
        check("-234h", K::Atom(Atom::Short(-234)));
        check("1i", K::Atom(Atom::Int(1)));
        check("42", long(42));
        check("-42j", long(-42));
        check("5.5e", K::Atom(Atom::Real(5.5)));
        check("1e", K::Atom(Atom::Real(1.0)));
        check("3.234", K::Atom(Atom::Float(3.234)));
        check("1f", K::Atom(Atom::Float(1.0)));
        check("1e20", K::Atom(Atom::Float(1e20)));
        check(".5", K::Atom(Atom::Float(0.5)));
        check("\"a\"", K::Atom(Atom::Char(b'a')));
        check("`GOOG", K::symbol("GOOG"));
        check("`", K::symbol(""));
        check("`:test/", K::symbol(":test/"));
        check("2001.01.01", K::Atom(Atom::Date(366)));
        check("1999.12.31", K::Atom(Atom::Date(-1)));
        check("2001.01m", K::Atom(Atom::Month(12)));
        check(
            "2018.01.26D01:49:00.884361000",
            K::Atom(Atom::Timestamp(570_246_540_884_361_000)),
        );
        check("2001.01.01T00:00:00.000", K::Atom(Atom::Datetime(366.0)));
        check(
            "0D05:36:57.600",
            K::Atom(Atom::Timespan(20_217_600_000_000)),
        );
        check(
            "-0D00:00:01.000000000",
            K::Atom(Atom::Timespan(-1_000_000_000)),
        );
        check("12:01", K::Atom(Atom::Minute(721)));
        check("12:05:00", K::Atom(Atom::Second(43_500)));
        check("12:04:59.123", K::Atom(Atom::Time(43_499_123)));
        check("43:12:34.567", K::Atom(Atom::Time(155_554_567)));
        // Nine decimals (more than three) make a timespan, type -16, not a time.
        check("00:00:00.000000000", K::Atom(Atom::Timespan(0)));
        check(
            "12:04:59.123456",
            K::Atom(Atom::Timespan(43_499_123_456_000)),
        );
        check(
            "\"G\"$\"8c680a01-5a49-5aab-5a65-d4bfddb6a661\"",
            K::Atom(Atom::Guid([
                0x8c, 0x68, 0x0a, 0x01, 0x5a, 0x49, 0x5a, 0xab, 0x5a, 0x65, 0xd4, 0xbf, 0xdd, 0xb6,
                0xa6, 0x61,
            ])),
        );
    }

    #[test]
    fn nulls_and_infinities() {
        check("0N", long(NULL_I64));
        check("0W", long(i64::MAX));
        check("-0W", long(-i64::MAX));
        check("0Nh", K::Atom(Atom::Short(NULL_I16)));
        check("0Wh", K::Atom(Atom::Short(i16::MAX)));
        check("0Ni", K::Atom(Atom::Int(NULL_I32)));
        check("-0Wi", K::Atom(Atom::Int(-i32::MAX)));
        check("0Nj", long(NULL_I64));
        check("0n", K::Atom(Atom::Float(f64::NAN)));
        check("0w", K::Atom(Atom::Float(f64::INFINITY)));
        check("-0w", K::Atom(Atom::Float(f64::NEG_INFINITY)));
        check("0Ne", K::Atom(Atom::Real(f32::NAN)));
        check("0we", K::Atom(Atom::Real(f32::INFINITY)));
        check("0Ng", K::Atom(Atom::Guid([0; 16])));
        check("0Np", K::Atom(Atom::Timestamp(NULL_I64)));
        check("0Wp", K::Atom(Atom::Timestamp(i64::MAX)));
        check("0Nd", K::Atom(Atom::Date(NULL_I32)));
        check("0Nm", K::Atom(Atom::Month(NULL_I32)));
        check("0Nz", K::Atom(Atom::Datetime(f64::NAN)));
        check("0Nn", K::Atom(Atom::Timespan(NULL_I64)));
        check("0Nu", K::Atom(Atom::Minute(NULL_I32)));
        check("0Nv", K::Atom(Atom::Second(NULL_I32)));
        check("0Nt", K::Atom(Atom::Time(NULL_I32)));
        check("\" \"", K::Atom(Atom::Char(b' ')));
    }

    #[test]
    fn vectors() {
        check("1 2 3", K::vector(VectorData::Long(vec![1, 2, 3])));
        check("1 2 3i", K::vector(VectorData::Int(vec![1, 2, 3])));
        check("1 0N 3", K::vector(VectorData::Long(vec![1, NULL_I64, 3])));
        check(
            "1 0N 0W -0Wh",
            K::vector(VectorData::Short(vec![1, NULL_I16, i16::MAX, -i16::MAX])),
        );
        check("1.5 2", K::vector(VectorData::Float(vec![1.5, 2.0])));
        check("1 2f", K::vector(VectorData::Float(vec![1.0, 2.0])));
        check(
            "101b",
            K::vector(VectorData::Boolean(vec![true, false, true])),
        );
        check("0x0001", K::vector(VectorData::Byte(vec![0, 1])));
        check("\"abc\"", K::string("abc"));
        check("\"\"", K::string(""));
        check("\"a\\\"b\\\\c\\n\\001\"", K::string(b"a\"b\\c\n\x01"));
        check("`a`b`c", K::symbols(["a", "b", "c"]));
        check("`abc``c", K::symbols(["abc", "", "c"]));
        check(
            "2013.06 2013.07m",
            K::vector(VectorData::Month(vec![161, 162])),
        );
        check(
            "2013.06.10 0N 0W",
            K::vector(VectorData::Date(vec![4909, NULL_I32, i32::MAX])),
        );
        check(
            "0N 0Ni",
            K::vector(VectorData::Int(vec![NULL_I32, NULL_I32])),
        );
        check("00:00 21:22", K::vector(VectorData::Minute(vec![0, 1282])));
        check("`int$()", K::vector(VectorData::Int(vec![])));
        check("`date$0 1", K::vector(VectorData::Date(vec![0, 1])));
        check("`month$200000i", K::Atom(Atom::Month(200_000)));
        check("`$\"a b\"", K::symbol("a b"));
        check("`$(\"a b\";,\"c\";\"\")", K::symbols(["a b", "c", ""]));
    }

    #[test]
    fn lists_dictionaries_and_tables() {
        check("::", K::Null);
        check("", K::Null);
        check("   ", K::Null);
        check("()", K::list(vec![]));
        check(
            "(1;`a;\"x\")",
            K::list(vec![long(1), K::symbol("a"), K::Atom(Atom::Char(b'x'))]),
        );
        check("(1;2)", K::vector(VectorData::Long(vec![1, 2])));
        check("(1;2i)", K::list(vec![long(1), K::Atom(Atom::Int(2))]));
        check(
            "(42;::;`foo)",
            K::list(vec![long(42), K::Null, K::symbol("foo")]),
        );
        check("enlist 1", K::vector(VectorData::Long(vec![1])));
        check(
            "enlist 00:00:00.000000000",
            K::vector(VectorData::Timespan(vec![0])),
        );
        check(
            "00:00:00.000000000 00:00:00.000000001",
            K::vector(VectorData::Timespan(vec![0, 1])),
        );
        check(",`a", K::symbols(["a"]));
        check(
            "enlist 1 2",
            K::list(vec![K::vector(VectorData::Long(vec![1, 2]))]),
        );
        check(
            "`a`b!1 2",
            K::dict(
                K::symbols(["a", "b"]),
                K::vector(VectorData::Long(vec![1, 2])),
            ),
        );
        let table = K::table(
            ["a", "b"],
            vec![
                K::vector(VectorData::Long(vec![1, 2])),
                K::symbols(["x", "y"]),
            ],
        );
        check("flip `a`b!(1 2;`x`y)", table.clone());
        check("+`a`b!(1 2;`x`y)", table);
        let mut sorted = Vector::new(VectorData::Long(vec![1, 2, 3]));
        sorted.attr = Attr::Sorted;
        check("`s#1 2 3", K::Vector(sorted));
        check(
            "`s#`a`b!1 2",
            K::Dict(Dict {
                sorted: true,
                keys: Box::new(K::Vector(Vector {
                    attr: Attr::Sorted,
                    data: VectorData::Symbol(["a", "b"].into_iter().collect()),
                })),
                values: Box::new(K::vector(VectorData::Long(vec![1, 2]))),
            }),
        );
        let keyed = "(flip (enlist `k)!enlist 1 2)!flip (enlist `v)!enlist 3 4";
        assert!(matches!(parse(keyed), Ok(K::Dict(_))), "{keyed}");
    }

    #[test]
    fn what_qgate_prints_reads_back() {
        // Values printed by the codec's Display (q syntax) read back to themselves.
        let values = [
            K::list(vec![long(1), K::string("ab"), K::symbols(["x"]), K::Null]),
            K::dict(
                K::symbols(["a"]),
                K::list(vec![K::vector(VectorData::Float(vec![1.5]))]),
            ),
            K::vector(VectorData::Timestamp(vec![0, NULL_I64])),
            K::vector(VectorData::Timespan(vec![1, -1])),
            K::vector(VectorData::Time(vec![NULL_I32, NULL_I32])),
            K::vector(VectorData::Real(vec![5.5, f32::NAN, 1.0, f32::INFINITY])),
        ];
        for value in values {
            check(&value.to_string(), value);
        }
    }

    #[test]
    fn what_is_not_data_is_refused() {
        for text in [
            "1+1",
            "select from t",
            "f[1]",
            "(1;2",
            "\"abc",
            "{x}",
            "2001.13.01",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
        let deep = format!("{}1", "enlist ".repeat(200));
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn no_text_makes_it_panic() {
        // Every prefix and suffix of literals that exercise each path: errors, never panics.
        let samples = [
            "`s#`a`b!(1 2;\"x\";0Nh;-0W)",
            "flip `a`b!(2001.01.01D00:00:00.000 0Np;12:04:59.123 0Nt)",
            "(enlist 0x0102;`$(\"a b\";,\"c\");\"G\"$\"8c680a01-5a49-5aab-5a65-d4bfddb6a661\")",
            "`date$0 1 2147483647i 2013.06 2013.07m 101b 1.5e-3 0we -0D00:00:01.5 \"\\377\"",
            "é(ü;`ñ)",
        ];
        for text in samples {
            for (i, _) in text.char_indices() {
                let _ = parse(&text[..i]);
                let _ = parse(&text[i..]);
            }
        }
    }
}
