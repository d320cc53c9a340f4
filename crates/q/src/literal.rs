//! Number and temporal literals: reading one lexed token, joining a run of tokens into a vector
//! the way q types it, and printing atoms the way the q console does.
//!
//! Temporal values use q's encodings (days, months, milliseconds or nanoseconds since 2000.01.01
//! or midnight); the calendar arithmetic is Howard Hinnant's.

use std::fmt::{self, Write as _};

use crate::tree::{Atom, Type};

/// q's null and infinity encodings for the integral types.
pub(crate) const NULL_I16: i16 = i16::MIN;
pub(crate) const NULL_I32: i32 = i32::MIN;
pub(crate) const NULL_I64: i64 = i64::MIN;

const NANOS_PER_DAY: i64 = 86_400_000_000_000;

/// How a token got its type, which decides how it joins a vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// An integer without a suffix (`5`): a long that takes the vector's type.
    Plain,
    /// A float without a suffix (`2.5`, `0n`): widens plain integers to floats.
    PlainFloat,
    /// `0N`, `0W` or `-0W`: a long null or infinity that takes the vector's type.
    Special,
    /// A type suffix (`5h`, `0Nd`) or a shape that fixes the type (`2000.01.01`).
    Typed,
}

/// One literal token read.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Lit {
    /// One atom, and how it got its type.
    One(Atom, Origin),
    /// A token that is a whole vector: `0101b`, `0x0102`.
    Many(Type, Vec<Atom>),
}

/// Reads one number token; `None` when q would not read it.
pub(crate) fn read(text: &[u8]) -> Option<Lit> {
    // The common case first: a plain integer.
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    if !digits.is_empty() && digits.len() <= 18 && digits.iter().all(u8::is_ascii_digit) {
        let magnitude = digits
            .iter()
            .fold(0i64, |acc, &d| acc * 10 + i64::from(d - b'0'));
        let value = if digits.len() < text.len() {
            -magnitude
        } else {
            magnitude
        };
        return Some(Lit::One(Atom::Long(value), Origin::Plain));
    }
    // The other common case: a date, `YYYY.MM.DD`.
    if let [y0, y1, y2, y3, b'.', m0, m1, b'.', d0, d1] = *text {
        let digits = [y0, y1, y2, y3, m0, m1, d0, d1];
        if digits.iter().all(u8::is_ascii_digit) {
            let number = |ds: &[u8]| {
                ds.iter()
                    .fold(0i64, |acc, &d| acc * 10 + i64::from(d - b'0'))
            };
            let atom = date_of(
                number(&digits[..4]),
                number(&digits[4..6]),
                number(&digits[6..]),
            )
            .map(Atom::Date)?;
            return Some(Lit::One(atom, Origin::Typed));
        }
    }
    let text = std::str::from_utf8(text).ok()?;
    if let Some(lit) = special(text) {
        return Some(lit);
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return bytes(hex);
    }
    if let Some(bits) = text.strip_suffix('b')
        && !bits.is_empty()
        && bits.bytes().all(|b| b == b'0' || b == b'1')
    {
        let atoms: Vec<Atom> = bits.bytes().map(|b| Atom::Boolean(b == b'1')).collect();
        return Some(if atoms.len() == 1 {
            Lit::One(atoms[0], Origin::Typed)
        } else {
            Lit::Many(Type::Boolean, atoms)
        });
    }
    if let Some(atom) = temporal(text) {
        return Some(Lit::One(atom, Origin::Typed));
    }
    numeric(text)
}

/// `0N`, `0n`, `0W`, `0w`, `-0W`, `-0w`, optionally with a type letter.
fn special(text: &str) -> Option<Lit> {
    let (negative, t) = match text.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, text),
    };
    let rest = t.strip_prefix('0')?;
    let mut chars = rest.chars();
    let which = chars.next()?;
    let letter = chars.next();
    if chars.next().is_some() || !matches!(which, 'N' | 'n' | 'W' | 'w') {
        return None;
    }
    let null = which.eq_ignore_ascii_case(&'n');
    if negative && null {
        return None;
    }
    let ty = match (which, letter) {
        ('N' | 'W', None) => {
            let value = if null {
                NULL_I64
            } else if negative {
                -i64::MAX
            } else {
                i64::MAX
            };
            return Some(Lit::One(Atom::Long(value), Origin::Special));
        }
        ('n' | 'w', None) => Type::Float,
        ('n' | 'w', Some('e')) => Type::Real,
        ('N' | 'W', Some(letter)) => suffix_type(letter)?,
        _ => return None,
    };
    let origin = if letter.is_none() {
        Origin::PlainFloat
    } else {
        Origin::Typed
    };
    let atom = if null {
        null_of(ty)?
    } else if negative {
        neg_infinity_of(ty)?
    } else {
        infinity_of(ty)?
    };
    Some(Lit::One(atom, origin))
}

/// The type a suffix letter names.
fn suffix_type(letter: char) -> Option<Type> {
    Some(match letter {
        'b' => Type::Boolean,
        'g' => Type::Guid,
        'x' => Type::Byte,
        'h' => Type::Short,
        'i' => Type::Int,
        'j' => Type::Long,
        'e' => Type::Real,
        'f' => Type::Float,
        'c' => Type::Char,
        's' => Type::Symbol,
        'p' => Type::Timestamp,
        'm' => Type::Month,
        'd' => Type::Date,
        'z' => Type::Datetime,
        'n' => Type::Timespan,
        'u' => Type::Minute,
        'v' => Type::Second,
        't' => Type::Time,
        _ => return None,
    })
}

/// The null of a type.
pub(crate) fn null_of(ty: Type) -> Option<Atom> {
    Some(match ty {
        Type::Guid => Atom::Guid([0; 16]),
        Type::Short => Atom::Short(NULL_I16),
        Type::Int => Atom::Int(NULL_I32),
        Type::Long => Atom::Long(NULL_I64),
        Type::Real => Atom::Real(f32::NAN),
        Type::Float => Atom::Float(f64::NAN),
        Type::Timestamp => Atom::Timestamp(NULL_I64),
        Type::Month => Atom::Month(NULL_I32),
        Type::Date => Atom::Date(NULL_I32),
        Type::Datetime => Atom::Datetime(f64::NAN),
        Type::Timespan => Atom::Timespan(NULL_I64),
        Type::Minute => Atom::Minute(NULL_I32),
        Type::Second => Atom::Second(NULL_I32),
        Type::Time => Atom::Time(NULL_I32),
        _ => return None,
    })
}

fn infinity_of(ty: Type) -> Option<Atom> {
    Some(match ty {
        Type::Short => Atom::Short(i16::MAX),
        Type::Int => Atom::Int(i32::MAX),
        Type::Long => Atom::Long(i64::MAX),
        Type::Real => Atom::Real(f32::INFINITY),
        Type::Float => Atom::Float(f64::INFINITY),
        Type::Timestamp => Atom::Timestamp(i64::MAX),
        Type::Month => Atom::Month(i32::MAX),
        Type::Date => Atom::Date(i32::MAX),
        Type::Datetime => Atom::Datetime(f64::INFINITY),
        Type::Timespan => Atom::Timespan(i64::MAX),
        Type::Minute => Atom::Minute(i32::MAX),
        Type::Second => Atom::Second(i32::MAX),
        Type::Time => Atom::Time(i32::MAX),
        _ => return None,
    })
}

fn neg_infinity_of(ty: Type) -> Option<Atom> {
    Some(match infinity_of(ty)? {
        Atom::Short(x) => Atom::Short(-x),
        Atom::Int(x) => Atom::Int(-x),
        Atom::Long(x) => Atom::Long(-x),
        Atom::Real(x) => Atom::Real(-x),
        Atom::Float(x) => Atom::Float(-x),
        Atom::Timestamp(x) => Atom::Timestamp(-x),
        Atom::Month(x) => Atom::Month(-x),
        Atom::Date(x) => Atom::Date(-x),
        Atom::Datetime(x) => Atom::Datetime(-x),
        Atom::Timespan(x) => Atom::Timespan(-x),
        Atom::Minute(x) => Atom::Minute(-x),
        Atom::Second(x) => Atom::Second(-x),
        Atom::Time(x) => Atom::Time(-x),
        other => other,
    })
}

/// `0x2a` (a byte) or `0x0102` (a byte vector), the digits after `0x`.
fn bytes(hex: &str) -> Option<Lit> {
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let digits = hex.as_bytes();
    // An odd digit count reads as if a leading zero were there.
    let padded: Vec<u8> = if digits.len() % 2 == 1 {
        std::iter::once(b'0')
            .chain(digits.iter().copied())
            .collect()
    } else {
        digits.to_vec()
    };
    let atoms: Vec<Atom> = padded
        .chunks_exact(2)
        .map(|pair| {
            let nibble = |c: u8| (c as char).to_digit(16).unwrap_or_default() as u8;
            Atom::Byte(nibble(pair[0]) << 4 | nibble(pair[1]))
        })
        .collect();
    Some(if atoms.len() == 1 {
        Lit::One(atoms[0], Origin::Typed)
    } else {
        Lit::Many(Type::Byte, atoms)
    })
}

/// Integers and floats, with an optional suffix: `42`, `-7i`, `2.5`, `1e3`, `1e`, `.5f`.
fn numeric(text: &str) -> Option<Lit> {
    let bytes = text.as_bytes();
    let mut i = 0;
    if bytes.first() == Some(&b'-') {
        i += 1;
    }
    let digits_start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    let mut int_digits = i - digits_start;
    let mut is_float = false;
    if i < bytes.len() && bytes[i] == b'.' {
        is_float = true;
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
            int_digits += 1;
        }
    }
    if int_digits == 0 {
        return None;
    }
    // An exponent: `e` then digits, with an optional sign.
    if i < bytes.len() && bytes[i] == b'e' {
        let mut j = i + 1;
        if j < bytes.len() && matches!(bytes[j], b'-' | b'+') {
            j += 1;
        }
        let exp_start = j;
        while j < bytes.len() && bytes[j].is_ascii_digit() {
            j += 1;
        }
        if j > exp_start {
            is_float = true;
            i = j;
        }
    }
    let body = &text[..i];
    let suffix = match &bytes[i..] {
        [] => None,
        [letter] => Some(*letter as char),
        _ => return None,
    };
    let ty = match suffix {
        None if is_float => {
            return body
                .parse::<f64>()
                .ok()
                .map(|v| Lit::One(Atom::Float(v), Origin::PlainFloat));
        }
        None => {
            return body
                .parse::<i64>()
                .ok()
                .filter(|&v| v != NULL_I64)
                .map(|v| Lit::One(Atom::Long(v), Origin::Plain));
        }
        Some(letter) => suffix_type(letter)?,
    };
    let atom = match ty {
        Type::Real => Atom::Real(body.parse::<f32>().ok()?),
        Type::Float => Atom::Float(body.parse::<f64>().ok()?),
        _ if is_float => return None,
        Type::Short => Atom::Short(body.parse::<i16>().ok().filter(|&v| v != NULL_I16)?),
        Type::Int => Atom::Int(body.parse::<i32>().ok().filter(|&v| v != NULL_I32)?),
        Type::Long => Atom::Long(body.parse::<i64>().ok().filter(|&v| v != NULL_I64)?),
        _ => return None,
    };
    Some(Lit::One(atom, Origin::Typed))
}

/// Reads a run of number tokens as one atom or vector, as q types a vector literal: a suffix on
/// the last item types them all, each item read as if it carried it (`1 2 3h`,
/// `2000.01 2000.02m`); otherwise integers widen to floats (`1 2.5`), and `0N`, `0W` take the
/// type of the others.
/// `None` when an item is not a literal or the items cannot share a type (`1 2000.01.01`).
pub(crate) fn read_run(texts: &[&[u8]]) -> Option<(Type, Vec<Atom>)> {
    let (last, rest) = texts.split_last()?;
    if !rest.is_empty()
        && let Some(&letter) = last.last()
        && letter.is_ascii_lowercase()
        && let Some(ty) = suffix_type(char::from(letter))
        && matches!(read(last), Some(Lit::One(atom, Origin::Typed)) if atom.ty() == ty)
    {
        let mut atoms = Vec::with_capacity(texts.len());
        for text in texts {
            let lit = if text.last().is_some_and(u8::is_ascii_alphabetic) {
                read(text)
            } else {
                let mut suffixed = text.to_vec();
                suffixed.push(letter);
                read(&suffixed)
            };
            match lit {
                Some(Lit::One(atom, _)) if atom.ty() == ty => atoms.push(atom),
                _ => return None,
            }
        }
        return Some((ty, atoms));
    }
    join(
        texts
            .iter()
            .map(|t| read(t))
            .collect::<Option<Vec<Lit>>>()?,
    )
}

/// Joins the literals of a run without a suffix at its end.
fn join(lits: Vec<Lit>) -> Option<(Type, Vec<Atom>)> {
    if lits.len() == 1 {
        return match lits.into_iter().next()? {
            Lit::One(atom, _) => Some((atom.ty(), vec![atom])),
            Lit::Many(ty, atoms) => Some((ty, atoms)),
        };
    }
    let mut ones = Vec::with_capacity(lits.len());
    for lit in lits {
        match lit {
            Lit::One(atom, origin) => ones.push((atom, origin)),
            // `01b 1b`: a vector token in a run.
            Lit::Many(..) => return None,
        }
    }
    let (last, last_origin) = *ones.last()?;
    let target = if last_origin == Origin::Typed && !matches!(last.ty(), Type::Boolean) {
        last.ty()
    } else {
        let mut target: Option<Type> = None;
        for &(atom, origin) in &ones {
            let ty = match origin {
                Origin::Plain | Origin::Special => continue,
                Origin::PlainFloat => Type::Float,
                Origin::Typed => atom.ty(),
            };
            target = match target {
                None => Some(ty),
                Some(t) if t == ty => Some(t),
                Some(_) => return None,
            };
        }
        target.unwrap_or(Type::Long)
    };
    ones.into_iter()
        .map(|(atom, origin)| convert(atom, origin, target))
        .collect::<Option<Vec<Atom>>>()
        .map(|atoms| (target, atoms))
}

/// One item of a vector literal, taken to the vector's type.
fn convert(atom: Atom, origin: Origin, target: Type) -> Option<Atom> {
    if atom.ty() == target {
        return Some(atom);
    }
    match (origin, atom) {
        (Origin::Special, Atom::Long(v)) => {
            if v == NULL_I64 {
                null_of(target)
            } else if v > 0 {
                infinity_of(target)
            } else {
                neg_infinity_of(target)
            }
        }
        (Origin::Plain, Atom::Long(v)) => match target {
            Type::Short => i16::try_from(v).ok().map(Atom::Short),
            Type::Int => i32::try_from(v).ok().map(Atom::Int),
            #[expect(clippy::cast_precision_loss, reason = "q widens the same way")]
            Type::Real => Some(Atom::Real(v as f32)),
            #[expect(clippy::cast_precision_loss, reason = "q widens the same way")]
            Type::Float => Some(Atom::Float(v as f64)),
            _ => None,
        },
        #[expect(clippy::cast_possible_truncation, reason = "q narrows the same way")]
        (Origin::PlainFloat, Atom::Float(v)) if target == Type::Real => Some(Atom::Real(v as f32)),
        _ => None,
    }
}

/// Temporal literals, by their shape.
fn temporal(text: &str) -> Option<Atom> {
    let body = text.trim_start_matches('-');
    if !body.bytes().next()?.is_ascii_digit() {
        return None;
    }
    // One pass to see which shape it may have.
    let (mut day, mut date_time, mut colons, mut dots) = (false, false, 0, 0);
    for b in text.bytes() {
        match b {
            b'D' => day = true,
            b'T' => date_time = true,
            b':' => colons += 1,
            b'.' => dots += 1,
            _ => {}
        }
    }
    if !day && !date_time && colons == 0 && !text.ends_with('m') {
        return if dots == 2 {
            date(text).map(Atom::Date)
        } else {
            None
        };
    }
    if let Some((day, time)) = text.split_once('D') {
        if day.matches('.').count() == 2 {
            let nanos = i64::from(date(day)?)
                .checked_mul(NANOS_PER_DAY)?
                .checked_add(time_of_day(time)?)?;
            return Some(Atom::Timestamp(nanos));
        }
        let (negative, days) = match day.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, day),
        };
        if days.is_empty() || !days.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let nanos = days
            .parse::<i64>()
            .ok()?
            .checked_mul(NANOS_PER_DAY)?
            .checked_add(time_of_day(time)?)?;
        return Some(Atom::Timespan(if negative { -nanos } else { nanos }));
    }
    if let Some((day, time)) = text.split_once('T') {
        let millis = time_of_day(time)? / 1_000_000;
        #[expect(clippy::cast_precision_loss, reason = "datetimes are days in a double")]
        let fraction = millis as f64 / 86_400_000.0;
        return Some(Atom::Datetime(f64::from(date(day)?) + fraction));
    }
    if text.contains(':') {
        let (negative, clock_text) = match text.strip_prefix('-') {
            Some(t) => (true, t),
            None => (false, text),
        };
        let (main, fraction) = match clock_text.split_once('.') {
            Some((main, fraction)) => (main, Some(fraction)),
            None => (clock_text, None),
        };
        let nanos = clock(main)?;
        let sign = |v: i64| if negative { -v } else { v };
        let fields = main.matches(':').count();
        return match (fields, fraction) {
            (1, None) => Some(Atom::Minute(
                i32::try_from(sign(nanos / 60_000_000_000)).ok()?,
            )),
            (2, None) => Some(Atom::Second(
                i32::try_from(sign(nanos / 1_000_000_000)).ok()?,
            )),
            (2, Some(f)) if f.len() <= 3 => {
                let total = nanos.checked_add(fraction_nanos(f)?)?;
                Some(Atom::Time(i32::try_from(sign(total / 1_000_000)).ok()?))
            }
            // More than three decimals make a timespan (`00:00:00.000000000`).
            (2, Some(f)) => Some(Atom::Timespan(sign(nanos.checked_add(fraction_nanos(f)?)?))),
            _ => None,
        };
    }
    if let Some(month_text) = text.strip_suffix('m') {
        let (y, m) = month_text.split_once('.')?;
        if y.len() != 4 || m.len() != 2 {
            return None;
        }
        let (y, m): (i32, i32) = (y.parse().ok()?, m.parse().ok()?);
        return (1..=12)
            .contains(&m)
            .then(|| Atom::Month((y - 2000) * 12 + m - 1));
    }
    if text.matches('.').count() == 2 {
        return date(text).map(Atom::Date);
    }
    None
}

/// Days from 1970.01.01 to a civil date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count from 1970.01.01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

const EPOCH_2000: i64 = 10_957;

/// `YYYY.MM.DD` as days since 2000.01.01.
fn date(text: &str) -> Option<i32> {
    let mut parts = text.splitn(3, '.');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    if ![y, m, d]
        .iter()
        .all(|part| part.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    date_of(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)
}

/// Year, month and day as days since 2000.01.01, if the day exists.
fn date_of(y: i64, m: i64, d: i64) -> Option<i32> {
    if !(1..=12).contains(&m) || d < 1 {
        return None;
    }
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let days_in_month = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if d > days_in_month {
        return None;
    }
    i32::try_from(days_from_civil(y, m, d) - EPOCH_2000).ok()
}

/// `hh:mm` or `hh:mm:ss` (hours may pass 24), in nanoseconds.
fn clock(text: &str) -> Option<i64> {
    let mut nanos: i64 = 0;
    let parts: Vec<&str> = text.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return None;
    }
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let value: i64 = part.parse().ok()?;
        if i > 0 && (part.len() != 2 || value >= 60) {
            return None;
        }
        let unit = [3_600_000_000_000, 60_000_000_000, 1_000_000_000][i];
        nanos = nanos.checked_add(value.checked_mul(unit)?)?;
    }
    Some(nanos)
}

/// The digits after a decimal point, at most nine, as nanoseconds.
fn fraction_nanos(digits: &str) -> Option<i64> {
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: i64 = digits.parse().ok()?;
    Some(value * 10_i64.pow(u32::try_from(9 - digits.len()).ok()?))
}

/// A time of day after a date or a day count: nothing, `hh`, `hh:mm`, `hh:mm:ss`, with a
/// fraction of up to nine digits.
fn time_of_day(text: &str) -> Option<i64> {
    if text.is_empty() {
        return Some(0);
    }
    let (main, fraction) = match text.split_once('.') {
        Some((main, fraction)) => (main, Some(fraction)),
        None => (text, None),
    };
    let base = if main.contains(':') {
        clock(main)?
    } else {
        if main.is_empty() || main.len() > 2 || !main.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        main.parse::<i64>().ok()? * 3_600_000_000_000
    };
    match fraction {
        Some(fraction) => base.checked_add(fraction_nanos(fraction)?),
        None => Some(base),
    }
}

/// A float as the q console prints it: seven significant digits (`\P 7`), like C's `%.7g`.
pub(crate) fn float_text(v: f64) -> String {
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    let sci = format!("{v:.6e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or_default();
    if !(-4..7).contains(&exponent) {
        let mantissa = trim_zeros(mantissa);
        let sign = if exponent < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exponent.unsigned_abs());
    }
    let decimals = usize::try_from(6 - exponent).unwrap_or_default();
    trim_zeros(&format!("{v:.decimals$}")).to_owned()
}

fn trim_zeros(text: &str) -> &str {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}

/// Whether a float's text reads as an integer, and so needs the `f` (or `e`) suffix.
pub(crate) fn looks_whole(text: &str) -> bool {
    !text.contains(['.', 'e', 'n', 'w'])
}

/// The text of one atom inside a vector, without the type suffix a vector puts once at its end.
pub(crate) fn item_text(out: &mut String, atom: Atom) {
    // Writing to a String cannot fail.
    let _ = write_item(out, atom);
}

fn write_item(out: &mut String, atom: Atom) -> fmt::Result {
    match atom {
        Atom::Boolean(b) => out.push(if b { '1' } else { '0' }),
        Atom::Guid(g) => {
            if g == [0; 16] {
                out.push_str("0N");
            } else {
                for (i, byte) in g.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        out.push('-');
                    }
                    write!(out, "{byte:02x}")?;
                }
            }
        }
        Atom::Byte(b) => write!(out, "{b:02x}")?,
        Atom::Short(v) => integral(
            out,
            i64::from(v),
            v == NULL_I16,
            v == i16::MAX,
            v == -i16::MAX,
        ),
        Atom::Int(v) => integral(
            out,
            i64::from(v),
            v == NULL_I32,
            v == i32::MAX,
            v == -i32::MAX,
        ),
        Atom::Long(v) => integral(out, v, v == NULL_I64, v == i64::MAX, v == -i64::MAX),
        Atom::Real(v) => floating(out, f64::from(v)),
        Atom::Float(v) => floating(out, v),
        Atom::Month(v) => {
            if !special_i32(out, v) {
                let (y, m) = (i64::from(v).div_euclid(12) + 2000, v.rem_euclid(12) + 1);
                write!(out, "{y:04}.{m:02}")?;
            }
        }
        Atom::Date(v) => {
            if !special_i32(out, v) {
                write_date(out, i64::from(v))?;
            }
        }
        Atom::Timestamp(v) => {
            if !special_i64(out, v) {
                write_date(out, v.div_euclid(NANOS_PER_DAY))?;
                out.push('D');
                write_clock(out, v.rem_euclid(NANOS_PER_DAY), 9)?;
            }
        }
        Atom::Datetime(v) => {
            if v.is_nan() {
                out.push_str("0N");
            } else if v.is_infinite() {
                out.push_str(if v > 0.0 { "0w" } else { "-0w" });
            } else {
                #[expect(
                    clippy::cast_possible_truncation,
                    reason = "datetimes are milliseconds"
                )]
                let millis = (v * 86_400_000.0).round() as i64;
                write_date(out, millis.div_euclid(86_400_000))?;
                out.push('T');
                write_clock(out, millis.rem_euclid(86_400_000) * 1_000_000, 3)?;
            }
        }
        Atom::Timespan(v) => {
            if !special_i64(out, v) {
                if v < 0 {
                    out.push('-');
                }
                let abs = v.unsigned_abs();
                let nanos_per_day = NANOS_PER_DAY.unsigned_abs();
                write!(out, "{}D", abs / nanos_per_day)?;
                // Invariant: the remainder is below one day, which fits an i64.
                write_clock(out, (abs % nanos_per_day) as i64, 9)?;
            }
        }
        Atom::Minute(v) => {
            if !special_i32(out, v) {
                let sign = if v < 0 { "-" } else { "" };
                let v = v.unsigned_abs();
                write!(out, "{sign}{:02}:{:02}", v / 60, v % 60)?;
            }
        }
        Atom::Second(v) => {
            if !special_i32(out, v) {
                let sign = if v < 0 { "-" } else { "" };
                let v = v.unsigned_abs();
                write!(
                    out,
                    "{sign}{:02}:{:02}:{:02}",
                    v / 3600,
                    v / 60 % 60,
                    v % 60
                )?;
            }
        }
        Atom::Time(v) => {
            if !special_i32(out, v) {
                if v < 0 {
                    out.push('-');
                }
                write_clock(out, i64::from(v.unsigned_abs()) * 1_000_000, 3)?;
            }
        }
    }
    Ok(())
}

fn integral(out: &mut String, v: i64, null: bool, inf: bool, neg_inf: bool) {
    if null {
        out.push_str("0N");
    } else if inf {
        out.push_str("0W");
    } else if neg_inf {
        out.push_str("-0W");
    } else {
        // Writing to a String cannot fail.
        let _ = write!(out, "{v}");
    }
}

fn floating(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("0n");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "0w" } else { "-0w" });
    } else {
        out.push_str(&float_text(v));
    }
}

fn special_i32(out: &mut String, v: i32) -> bool {
    match v {
        NULL_I32 => out.push_str("0N"),
        i32::MAX => out.push_str("0W"),
        v if v == -i32::MAX => out.push_str("-0W"),
        _ => return false,
    }
    true
}

fn special_i64(out: &mut String, v: i64) -> bool {
    match v {
        NULL_I64 => out.push_str("0N"),
        i64::MAX => out.push_str("0W"),
        v if v == -i64::MAX => out.push_str("-0W"),
        _ => return false,
    }
    true
}

fn write_date(out: &mut String, days_since_2000: i64) -> fmt::Result {
    let (y, m, d) = civil_from_days(days_since_2000 + EPOCH_2000);
    write!(out, "{y:04}.{m:02}.{d:02}")
}

/// `hh:mm:ss` and `digits` decimals of a second, from nanoseconds since midnight.
fn write_clock(out: &mut String, nanos: i64, digits: u32) -> fmt::Result {
    let seconds = nanos / 1_000_000_000;
    let fraction = (nanos % 1_000_000_000) / 10_i64.pow(9 - digits);
    write!(
        out,
        "{:02}:{:02}:{:02}.{fraction:0width$}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        width = digits as usize
    )
}

/// The letter that follows an atom of `ty` when q prints it (`i` for `1i`), and follows a
/// null or infinity of it (`0Ni`); `None` when there is none.
pub(crate) fn suffix(ty: Type) -> Option<char> {
    match ty {
        Type::Boolean => Some('b'),
        Type::Short => Some('h'),
        Type::Int => Some('i'),
        Type::Real => Some('e'),
        Type::Month => Some('m'),
        _ => None,
    }
}

/// The letter q puts after `0N` or `0W` for a type whose values print without a suffix.
pub(crate) fn special_letter(ty: Type) -> Option<char> {
    match ty {
        Type::Guid => Some('g'),
        Type::Timestamp => Some('p'),
        Type::Date => Some('d'),
        Type::Datetime => Some('z'),
        Type::Timespan => Some('n'),
        Type::Minute => Some('u'),
        Type::Second => Some('v'),
        Type::Time => Some('t'),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(text: &str, expect: Option<Atom>) {
        let got = match read(text.as_bytes()) {
            Some(Lit::One(atom, _)) => Some(atom),
            Some(Lit::Many(..)) => panic!("{text}: a vector"),
            None => None,
        };
        match (got, expect) {
            (Some(Atom::Float(a)), Some(Atom::Float(b))) if a.is_nan() && b.is_nan() => {}
            (got, expect) => assert_eq!(got, expect, "{text}"),
        }
    }

    #[test]
    fn atoms() {
        check("42", Some(Atom::Long(42)));
        check("-7i", Some(Atom::Int(-7)));
        check("3h", Some(Atom::Short(3)));
        check("2.5", Some(Atom::Float(2.5)));
        check("1e3", Some(Atom::Float(1000.0)));
        check("1e", Some(Atom::Real(1.0)));
        check(".5", Some(Atom::Float(0.5)));
        check("2f", Some(Atom::Float(2.0)));
        check("1b", Some(Atom::Boolean(true)));
        check("0x2a", Some(Atom::Byte(42)));
        check("0N", Some(Atom::Long(NULL_I64)));
        check("0Ni", Some(Atom::Int(NULL_I32)));
        check("0n", Some(Atom::Float(f64::NAN)));
        check("-0W", Some(Atom::Long(-i64::MAX)));
        check("0Wd", Some(Atom::Date(i32::MAX)));
        check("2013.05.15", Some(Atom::Date(4883)));
        check("2014.02m", Some(Atom::Month(169)));
        check("2000.01.01D00:00:01", Some(Atom::Timestamp(1_000_000_000)));
        check("0D05:36:57.600", Some(Atom::Timespan(20_217_600_000_000)));
        check("12:01", Some(Atom::Minute(721)));
        check("12:05:00", Some(Atom::Second(43_500)));
        check("12:04:59.123", Some(Atom::Time(43_499_123)));
        check("00:00:00.000000001", Some(Atom::Timespan(1)));
        check("2001.01.01T00:00:00.000", Some(Atom::Datetime(366.0)));
        check("2013.02.30", None);
        check("1x", None);
        check("1.5i", None);
        check("12:60", None);
        check("99999999999999999999", None);
    }

    #[track_caller]
    fn check_join(texts: &[&str], expect: Option<&str>) {
        let texts: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
        let got = read_run(&texts).map(|(ty, atoms)| {
            let items: Vec<String> = atoms
                .iter()
                .map(|&a| {
                    let mut s = String::new();
                    item_text(&mut s, a);
                    s
                })
                .collect();
            format!("{} {}", ty.name(), items.join(" "))
        });
        assert_eq!(got.as_deref(), expect, "{texts:?}");
    }

    #[test]
    fn vectors_take_one_type() {
        check_join(&["1", "2", "3"], Some("long 1 2 3"));
        check_join(&["1", "2", "3h"], Some("short 1 2 3"));
        check_join(&["1", "2.5"], Some("float 1 2.5"));
        check_join(&["1", "0N", "3"], Some("long 1 0N 3"));
        check_join(&["2000.01.01", "0N"], Some("date 2000.01.01 0N"));
        check_join(&["1", "-1"], Some("long 1 -1"));
        check_join(&["1", "2000.01.01"], None);
        check_join(&["1b", "0b"], Some("boolean 1 0"));
        check_join(&["2000.01", "2000.02m"], Some("month 2000.01 2000.02"));
        check_join(&["1", "2", "3e"], Some("real 1 2 3"));
        check_join(&["1", "2.5", "3i"], None);
    }

    #[test]
    fn floats_print_with_seven_digits() {
        let check = |v: f64, expect: &str| assert_eq!(float_text(v), expect, "{v}");
        check(0.5, "0.5");
        check(1.234_567_89, "1.234568");
        check(1e10, "1e+10");
        check(100_000.0, "100000");
        check(1_234_567.0, "1234567");
        check(12_345_678.0, "1.234568e+07");
        check(0.0001, "0.0001");
        check(0.000_01, "1e-05");
        check(-2.5, "-2.5");
        check(440.1234, "440.1234");
    }

    #[test]
    fn a_day_exists_when_the_calendar_has_it() {
        // The month lengths, against the day counts between first days of months.
        for y in (1596..=2404).chain([1, 9999]) {
            for m in 1..=12 {
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                let length = days_from_civil(ny, nm, 1) - days_from_civil(y, m, 1);
                for d in 0..=32 {
                    let exists = (1..=length).contains(&d);
                    assert_eq!(date_of(y, m, d).is_some(), exists, "{y}.{m}.{d}");
                }
            }
        }
    }

    #[test]
    fn dates_read_alike_by_either_path() {
        // `read` has a short path for `YYYY.MM.DD`; `temporal` reads the same text the long way.
        for text in [
            "2024.01.02",
            "2000.01.01",
            "1999.12.31",
            "2024.02.29",
            "2023.02.29",
            "2023.13.01",
            "2023.00.10",
            "2023.04.31",
            "0001.01.01",
            "9999.12.31",
            "1900.02.29",
            "2000.02.29",
            "2100.02.29",
            "2024.04.30",
            "2024.12.32",
        ] {
            let long = temporal(text).map(|atom| Lit::One(atom, Origin::Typed));
            assert_eq!(read(text.as_bytes()), long, "{text}");
        }
    }

    #[test]
    fn temporal_text() {
        let text = |atom| {
            let mut s = String::new();
            item_text(&mut s, atom);
            s
        };
        assert_eq!(text(Atom::Date(4883)), "2013.05.15");
        assert_eq!(text(Atom::Month(169)), "2014.02");
        assert_eq!(
            text(Atom::Timespan(20_217_600_000_000)),
            "0D05:36:57.600000000"
        );
        assert_eq!(text(Atom::Time(43_499_123)), "12:04:59.123");
        assert_eq!(text(Atom::Minute(721)), "12:01");
        assert_eq!(text(Atom::Timestamp(0)), "2000.01.01D00:00:00.000000000");
        assert_eq!(text(Atom::Datetime(366.0)), "2001.01.01T00:00:00.000");
        assert_eq!(text(Atom::Date(-1)), "1999.12.31");
    }
}
