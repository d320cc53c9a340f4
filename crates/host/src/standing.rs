//! Verdicts that stand for a connection: a plugin that answers `pass-always` or
//! `filter-always` is not called again for that event on that connection; the host passes, or
//! applies the filter itself, until the connection closes or the plugin is swapped. Likewise a
//! message verdict given with `same-for-head` stands for the connection's later calls of the
//! same function: an allowed feed function costs one plugin call, not one a message.
//!
//! A subscriber's feed is thousands of publications a second. Calling a plugin for each costs
//! microseconds a message; a filter that depends on the connection and the table alone (the
//! symbols a user may see) is decided once and applied here, in the bytes, as a tickerplant
//! filters each subscriber's symbols itself.
//!
//! ```text
//!   data_chain, per plugin:
//!     standing rule for (connection, plugin, event) and still this version?
//!       ├─ pass   ──► next plugin
//!       ├─ filter ──► Filter::apply ──► next plugin with the kept rows, or dropped
//!       └─ none   ──► call the plugin; pass-always / filter-always are remembered
//! ```
//!
//! A rule names the plugin version that gave it (a `Weak`, so a swapped-out version is not kept
//! alive and its address is not reused while the rule exists): after a swap the new version is
//! asked again. `forget` drops a connection's rules when it closes.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError, Weak},
};

use qgate_hooks::{Body, Handle, Request, Session};
use qgate_ipc::{
    Endian,
    table::{self, Mask, Rewritten, RowSelection, TableEdit, TableError},
};

use crate::{bindings::types, plugin::Plugin};

/// What stands for one connection, plugin and event.
#[derive(Clone, Debug)]
pub(crate) enum Rule {
    /// Pass without asking.
    Pass,
    /// Apply the filter without asking.
    Filter(Arc<Filter>),
}

/// The most message verdicts that stand for one connection (`same-for-head`), in all: a client
/// that calls a thousand different functions makes the plugins' calls past these as usual,
/// rather than growing the host's memory.
pub(crate) const MAX_CALL_VERDICTS: usize = 64;

/// A sync or async message that calls a function: what a message verdict stands for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Call<'a> {
    pub(crate) sync: bool,
    /// The function's name, or the string q evaluates for it.
    pub(crate) head: &'a str,
    /// Whether the head is a symbol rather than a string.
    pub(crate) symbol: bool,
}

/// What a standing rule is for.
#[derive(Debug, PartialEq, Eq)]
enum Key {
    /// Replies (`false`) or publications (`true`): a [`Rule`].
    Data { publication: bool },
    /// Sync (`true`) or async messages that call the function `head`, a symbol or a string
    /// (which q evaluates, and a plugin may tell apart): a message verdict.
    Call {
        sync: bool,
        head: Box<str>,
        symbol: bool,
    },
}

/// What stands.
#[derive(Debug)]
enum Standing {
    Data(Rule),
    Call(types::Verdict),
}

/// One standing rule.
#[derive(Debug)]
struct Entry {
    /// The plugin's place in the chain.
    slot: usize,
    key: Key,
    /// The version that gave it.
    plugin: Weak<Plugin>,
    standing: Standing,
}

impl Key {
    /// Whether this is the key of `call`, without making one to compare.
    fn is_call(&self, call: Call<'_>) -> bool {
        matches!(self, Key::Call { sync, head, symbol }
            if *sync == call.sync && **head == *call.head && *symbol == call.symbol)
    }
}

/// What stands for one connection.
#[derive(Debug)]
struct Connection {
    /// Whose connection the handle is: q reuses a closed connection's handle, and a handle seen
    /// with another user or address is another connection (in `qgate replay` and `qgate test`,
    /// which may not close one before the next).
    user: Arc<[u8]>,
    peer: SocketAddr,
    /// A few entries (one per plugin and data event, and at most [`MAX_CALL_VERDICTS`] message
    /// verdicts).
    entries: Vec<Entry>,
}

impl Connection {
    fn is(&self, session: &Session) -> bool {
        self.peer == session.peer && self.user == session.user
    }
}

/// The standing rules of every connection.
#[derive(Debug, Default)]
pub(crate) struct Standings {
    /// By connection handle. A `std` mutex, held for a lookup or an insert.
    rules: Mutex<HashMap<Handle, Connection>>,
}

impl Standings {
    /// The rule standing for `handle`'s connection from the plugin in `slot`, if `plugin` (its
    /// current version) gave it; a rule from an older version is dropped.
    pub(crate) fn get(
        &self,
        session: &Session,
        slot: usize,
        publication: bool,
        plugin: &Arc<Plugin>,
    ) -> Option<Rule> {
        let key = Key::Data { publication };
        match self.find(session, slot, plugin, |k| *k == key)? {
            Standing::Data(rule) => Some(rule),
            Standing::Call(_) => None,
        }
    }

    /// Records `rule` for `session`'s connection from `plugin`, the current version in `slot`.
    pub(crate) fn set(
        &self,
        session: &Session,
        slot: usize,
        publication: bool,
        plugin: &Arc<Plugin>,
        rule: Rule,
    ) {
        self.insert(
            session,
            slot,
            Key::Data { publication },
            plugin,
            Standing::Data(rule),
        );
    }

    /// The verdict standing for `session`'s messages like `call` from the plugin in `slot`, if
    /// `plugin` (its current version) gave it.
    pub(crate) fn verdict(
        &self,
        session: &Session,
        slot: usize,
        call: Call<'_>,
        plugin: &Arc<Plugin>,
    ) -> Option<types::Verdict> {
        match self.find(session, slot, plugin, |k| k.is_call(call))? {
            Standing::Call(verdict) => Some(verdict),
            Standing::Data(_) => None,
        }
    }

    /// Records `verdict` for `session`'s later messages like `call`, from `plugin`, the current
    /// version in `slot`; nothing once the connection has [`MAX_CALL_VERDICTS`].
    pub(crate) fn set_verdict(
        &self,
        session: &Session,
        slot: usize,
        call: Call<'_>,
        plugin: &Arc<Plugin>,
        verdict: types::Verdict,
    ) {
        let key = Key::Call {
            sync: call.sync,
            head: call.head.into(),
            symbol: call.symbol,
        };
        self.insert(session, slot, key, plugin, Standing::Call(verdict));
    }

    /// What stands for the plugin in `slot` under the key `is` picks, if `plugin` (its current
    /// version) gave it; what an older version gave is dropped.
    fn find(
        &self,
        session: &Session,
        slot: usize,
        plugin: &Arc<Plugin>,
        is: impl Fn(&Key) -> bool,
    ) -> Option<Standing> {
        find_in(&mut self.lock().rules, session, slot, plugin, is)
    }

    /// The table held for a walk along a chain: one lock for the lookups of every slot until the
    /// first plugin call, which must not hold it (release it first, by dropping it).
    pub(crate) fn lock(&self) -> Locked<'_> {
        Locked {
            rules: self.rules.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }

    fn insert(
        &self,
        session: &Session,
        slot: usize,
        key: Key,
        plugin: &Arc<Plugin>,
        standing: Standing,
    ) {
        let mut locked = self.lock();
        let connection = locked
            .rules
            .entry(session.handle)
            .or_insert_with(|| Connection {
                user: Arc::clone(&session.user),
                peer: session.peer,
                entries: Vec::new(),
            });
        if !connection.is(session) {
            connection.user = Arc::clone(&session.user);
            connection.peer = session.peer;
            connection.entries.clear();
        }
        let entries = &mut connection.entries;
        entries.retain(|e| !(e.slot == slot && e.key == key));
        let calls = entries
            .iter()
            .filter(|e| matches!(e.key, Key::Call { .. }))
            .count();
        if matches!(key, Key::Call { .. }) && calls >= MAX_CALL_VERDICTS {
            return;
        }
        entries.push(Entry {
            slot,
            key,
            plugin: Arc::downgrade(plugin),
            standing,
        });
    }

    /// Drops the rules of a connection that closed.
    pub(crate) fn forget(&self, handle: Handle) {
        let removed = self
            .rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&handle);
        drop(removed);
    }
}

/// The standing table, locked: see [`Standings::lock`].
pub(crate) struct Locked<'a> {
    rules: std::sync::MutexGuard<'a, HashMap<Handle, Connection>>,
}

impl Locked<'_> {
    /// [`Standings::verdict`], under the lock already held.
    pub(crate) fn verdict(
        &mut self,
        session: &Session,
        slot: usize,
        call: Call<'_>,
        plugin: &Arc<Plugin>,
    ) -> Option<types::Verdict> {
        match find_in(&mut self.rules, session, slot, plugin, |k| k.is_call(call))? {
            Standing::Call(verdict) => Some(verdict),
            Standing::Data(_) => None,
        }
    }
}

/// [`Standings::find`] in `rules`.
fn find_in(
    rules: &mut HashMap<Handle, Connection>,
    session: &Session,
    slot: usize,
    plugin: &Arc<Plugin>,
    is: impl Fn(&Key) -> bool,
) -> Option<Standing> {
    let connection = rules.get_mut(&session.handle)?;
    if !connection.is(session) {
        connection.entries.clear();
        return None;
    }
    let entries = &mut connection.entries;
    let at = entries.iter().position(|e| e.slot == slot && is(&e.key))?;
    if std::ptr::eq(entries[at].plugin.as_ptr(), Arc::as_ptr(plugin)) {
        return Some(match &entries[at].standing {
            Standing::Data(rule) => Standing::Data(rule.clone()),
            Standing::Call(verdict) => Standing::Call(verdict.clone()),
        });
    }
    entries.swap_remove(at);
    None
}

/// Up to this many rows, a table's symbols are looked up one by one; above it, each distinct
/// symbol once ([`RowSelection::from_symbols`], whose cache costs more to set up than a few
/// lookups: a tickerplant's batch is often a handful of rows).
const LOOKUPS_ONE_BY_ONE: usize = 64;

/// Names to look up: sorted, so that a lookup is a few comparisons and no hashing.
#[derive(Debug)]
struct Names(Vec<Vec<u8>>);

impl Names {
    fn new(names: Vec<String>) -> Self {
        let mut names: Vec<Vec<u8>> = names.into_iter().map(String::into_bytes).collect();
        names.sort_unstable();
        names.dedup();
        Self(names)
    }

    fn contains(&self, name: &[u8]) -> bool {
        self.0
            .binary_search_by(|probe| probe.as_slice().cmp(name))
            .is_ok()
    }
}

/// A `publication-filter`, ready to apply: names as bytes, sorted for the lookups.
#[derive(Debug)]
pub(crate) struct Filter {
    pass_tables: Names,
    column: Option<Vec<u8>>,
    keep: Names,
    remove: Vec<Vec<u8>>,
    mask: Vec<Vec<u8>>,
    max_rows: Option<usize>,
    max_bytes: Option<u64>,
}

/// What a filter does to one publication.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// It goes as it came.
    Pass,
    /// It goes with these rows and columns.
    Changed(Body),
    /// It is dropped, for this reason.
    Drop(String),
}

impl Filter {
    pub(crate) fn new(filter: types::PublicationFilter) -> Self {
        let bytes = |names: Vec<String>| names.into_iter().map(String::into_bytes);
        Self {
            pass_tables: Names::new(filter.pass_tables),
            column: filter.column.map(String::into_bytes),
            keep: Names::new(filter.keep),
            remove: bytes(filter.remove).collect(),
            mask: bytes(filter.mask).collect(),
            max_rows: filter
                .max_rows
                .map(|rows| usize::try_from(rows).unwrap_or(usize::MAX)),
            max_bytes: filter.max_bytes,
        }
    }

    /// Applies the filter to a publication (see `publication-filter` in the WIT).
    pub(crate) fn apply(&self, message: &Request) -> Applied {
        let view = message.view();
        let size = view.as_bytes().len() as u64;
        if let Some(max) = self.max_bytes
            && size > max
        {
            return Applied::Drop(format!(
                "{size} bytes is over the filter's max-bytes of {max}"
            ));
        }
        if view.endian() == Endian::Little
            && let Some(applied) = self.apply_small(view.as_bytes())
        {
            return applied;
        }
        self.apply_general(message)
    }

    /// [`Filter::apply`] by the codec's general rewrite.
    fn apply_general(&self, message: &Request) -> Applied {
        let view = message.view();
        let (mut had, mut sent) = (0usize, 0usize);
        let rewritten = table::rewrite(view.as_bytes(), view.endian(), |found| {
            if found
                .name()
                .is_some_and(|name| self.pass_tables.contains(name))
            {
                return Ok(TableEdit::default());
            }
            let mut edit = TableEdit::default();
            had += found.rows();
            match &self.column {
                Some(column) => {
                    let Some(column) = found.column(column) else {
                        let table = found.name().map_or_else(
                            || "the table".to_owned(),
                            |name| format!("table `{}`", String::from_utf8_lossy(name)),
                        );
                        return Err(Dropped(format!(
                            "{table} has no column `{}`",
                            String::from_utf8_lossy(column)
                        )));
                    };
                    let rows = if found.rows() <= LOOKUPS_ONE_BY_ONE {
                        let mut names = column.symbols().ok_or_else(|| {
                            Dropped(format!(
                                "column `{}` is not a symbol column",
                                String::from_utf8_lossy(column.name().unwrap_or_default())
                            ))
                        })?;
                        RowSelection::from_fn(found.rows(), |_| {
                            names.next().is_some_and(|name| self.keep.contains(name))
                        })
                    } else {
                        RowSelection::from_symbols(column, |name| self.keep.contains(name))?
                    };
                    sent += rows.count();
                    if rows.count() != rows.rows() {
                        edit.rows = Some(rows);
                    }
                }
                None => sent += found.rows(),
            }
            let present = |name: &&Vec<u8>| found.column(name.as_slice()).is_some();
            edit.drop = self
                .remove
                .iter()
                .filter(present)
                .map(|name| name.as_slice().into())
                .collect();
            edit.mask = self
                .mask
                .iter()
                .filter(present)
                .map(|name| (name.as_slice().into(), Mask::Null))
                .collect();
            edit.max_rows = self.max_rows.filter(|&max| found.rows() > max);
            Ok(edit)
        });
        let changed = match rewritten {
            Ok(Rewritten::NotATable) => {
                return Applied::Drop("it holds no table to filter".to_owned());
            }
            Ok(Rewritten::Unchanged) => None,
            Ok(Rewritten::Changed(bytes)) => Some(bytes),
            Err(Dropped(why)) => return Applied::Drop(why),
        };
        // What the plugin's own check would have logged: the rows sent and filtered out, at
        // debug, since a feed sends thousands a second.
        tracing::debug!(
            rows_sent = sent,
            rows_filtered = had - sent,
            "publication filtered by a standing filter"
        );
        if had > 0 && sent == 0 {
            return Applied::Drop(NO_ROWS.to_owned());
        }
        match changed {
            None => Applied::Pass,
            Some(bytes) => match Body::new(bytes) {
                Ok(body) => Applied::Changed(body),
                Err(error) => Applied::Drop(format!("the filtered value is malformed: {error}")),
            },
        }
    }
}

/// The most rows and columns of a publication that [`Filter::apply_small`] takes: a feed's update
/// is a few rows of a few columns; anything larger goes through the general rewrite, whose setup
/// is then worth it.
const SMALL_MAX_ROWS: usize = 64;
const SMALL_MAX_COLUMNS: usize = 32;
/// Of which at most this many symbol columns, whose names' ends are kept on the stack.
const SMALL_MAX_SYMBOL_COLUMNS: usize = 4;

/// Why a publication with none of the connection's rows is dropped.
const NO_ROWS: &str = "none of its rows are for this connection";

/// The item size of a vector type that [`Filter::apply_small`] copies by the item; symbols (11)
/// are read by name, and anything else goes to the general rewrite.
fn item_size(type_code: u8) -> Option<usize> {
    Some(match type_code {
        1 | 4 | 10 => 1,
        5 => 2,
        6 | 8 | 13 | 14 | 17 | 18 | 19 => 4,
        7 | 9 | 12 | 15 | 16 => 8,
        2 => 16,
        _ => return None,
    })
}

/// Reads a little-endian body that has been validated; every read is checked all the same, and a
/// surprise is `None`.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    fn count(&mut self) -> Option<usize> {
        let raw = self.bytes.get(self.at..self.at + 4)?;
        self.at += 4;
        Some(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize)
    }

    /// A symbol's name, without its NUL.
    fn name(&mut self) -> Option<&'a [u8]> {
        let rest = self.bytes.get(self.at..)?;
        let len = rest.iter().position(|&b| b == 0)?;
        self.at += len + 1;
        rest.get(..len)
    }

    fn skip(&mut self, len: usize) -> Option<()> {
        let end = self.at.checked_add(len)?;
        (end <= self.bytes.len()).then(|| self.at = end)
    }
}

/// A column of a small publication: its type, attribute and where its items are.
#[derive(Clone, Copy, Default)]
struct SmallColumn {
    type_code: u8,
    attr: u8,
    start: usize,
    end: usize,
    /// For a symbol column, its row of name ends.
    slot: Option<usize>,
}

impl Filter {
    /// The common case of a feed, done in one pass and one allocation: an update
    /// `` (`upd;`table;t) `` whose `t` is a table of at most [`SMALL_MAX_ROWS`] rows of simple
    /// vectors, filtered by rows alone (no removed or masked columns, no row cap). The bytes are
    /// the ones the general rewrite writes: the same prefix, and each column with its attribute
    /// and the kept items. `None` for anything else, which [`Filter::apply_general`] takes.
    fn apply_small(&self, body: &[u8]) -> Option<Applied> {
        if !self.remove.is_empty() || !self.mask.is_empty() || self.max_rows.is_some() {
            return None;
        }
        let key_name = self.column.as_deref()?;
        let mut cursor = Cursor { bytes: body, at: 0 };
        // A general list of three: two symbol atoms, then a table.
        let symbol_atom = (-11_i8) as u8;
        if cursor.byte()? != 0 {
            return None;
        }
        cursor.byte()?;
        if cursor.count()? != 3 || cursor.byte()? != symbol_atom {
            return None;
        }
        cursor.name()?;
        if cursor.byte()? != symbol_atom {
            return None;
        }
        if self.pass_tables.contains(cursor.name()?) {
            return Some(Applied::Pass);
        }
        // The table: its attribute, a dictionary of a symbol vector of names and a general list.
        if cursor.byte()? != 98 {
            return None;
        }
        cursor.byte()?;
        if cursor.byte()? != 99 || cursor.byte()? != 11 {
            return None;
        }
        cursor.byte()?;
        let width = cursor.count()?;
        if width == 0 || width > SMALL_MAX_COLUMNS {
            return None;
        }
        let mut key = None;
        for index in 0..width {
            if cursor.name()? == key_name {
                key = Some(index);
            }
        }
        let key = key?;
        if cursor.byte()? != 0 {
            return None;
        }
        cursor.byte()?;
        if cursor.count()? != width {
            return None;
        }
        let prefix = cursor.at;
        let mut columns = [SmallColumn::default(); SMALL_MAX_COLUMNS];
        // Where each name of a symbol column ends (after its NUL), read once: the key's are
        // looked up and every symbol column's are copied.
        let mut name_ends = [[0u32; SMALL_MAX_ROWS]; SMALL_MAX_SYMBOL_COLUMNS];
        let mut symbol_columns = 0;
        let mut rows = None;
        for column in columns.iter_mut().take(width) {
            let type_code = cursor.byte()?;
            let attr = cursor.byte()?;
            let count = cursor.count()?;
            if *rows.get_or_insert(count) != count || count > SMALL_MAX_ROWS {
                return None;
            }
            let start = cursor.at;
            let mut slot = None;
            if type_code == 11 {
                let ends = name_ends.get_mut(symbol_columns)?;
                for end in ends.iter_mut().take(count) {
                    cursor.name()?;
                    *end = u32::try_from(cursor.at).ok()?;
                }
                slot = Some(symbol_columns);
                symbol_columns += 1;
            } else {
                cursor.skip(item_size(type_code)?.checked_mul(count)?)?;
            }
            *column = SmallColumn {
                type_code,
                attr,
                start,
                end: cursor.at,
                slot,
            };
        }
        if cursor.at != body.len() || columns[key].type_code != 11 {
            return None;
        }
        let rows = rows?;
        // The items of a symbol column, each with its NUL.
        let names = |column: &SmallColumn| {
            let ends = &name_ends[column.slot.unwrap_or_default()][..rows];
            let mut start = column.start;
            ends.iter().map(move |&end| {
                let name = (start, end as usize);
                start = end as usize;
                name
            })
        };
        // Bit `row` set when the row stays.
        let mut kept: u64 = 0;
        for (row, (start, end)) in names(&columns[key]).enumerate() {
            if self.keep.contains(body.get(start..end - 1)?) {
                kept |= 1 << row;
            }
        }
        let sent = kept.count_ones() as usize;
        tracing::debug!(
            rows_sent = sent,
            rows_filtered = rows - sent,
            "publication filtered by a standing filter"
        );
        if sent == rows {
            return Some(Applied::Pass);
        }
        if sent == 0 {
            return Some(Applied::Drop(NO_ROWS.to_owned()));
        }
        let mut out = Vec::with_capacity(body.len());
        out.extend_from_slice(body.get(..prefix)?);
        for column in &columns[..width] {
            out.extend_from_slice(&[column.type_code, column.attr]);
            out.extend_from_slice(&(sent as u32).to_le_bytes());
            let items = body.get(column.start..column.end)?;
            if column.type_code == 11 {
                for (row, (start, end)) in names(column).enumerate() {
                    if kept & (1 << row) != 0 {
                        out.extend_from_slice(body.get(start..end)?);
                    }
                }
            } else {
                let size = item_size(column.type_code)?;
                for row in 0..rows {
                    if kept & (1 << row) != 0 {
                        out.extend_from_slice(items.get(row * size..(row + 1) * size)?);
                    }
                }
            }
        }
        // Whole items of a checked message, in the layout the general rewrite writes (the unit
        // tests compare the two): checking it again would cost a fifth of the message's time.
        Some(Applied::Changed(Body::assume_valid(out)))
    }
}

/// Why a filter drops a publication, in words.
struct Dropped(String);

impl From<TableError> for Dropped {
    fn from(error: TableError) -> Self {
        Self(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use qgate_ipc::{Attr, K, Limits, Message, MessageType, Vector, VectorData};

    use super::*;

    fn filter(keep: &[&str], pass_tables: &[&str]) -> Filter {
        let names = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect();
        Filter::new(types::PublicationFilter {
            pass_tables: names(pass_tables),
            column: Some("sym".to_owned()),
            keep: names(keep),
            remove: Vec::new(),
            mask: Vec::new(),
            max_rows: None,
            max_bytes: None,
        })
    }

    fn publication(table: &str, value: K) -> Request {
        let upd = K::list(vec![K::symbol("upd"), K::symbol(table), value]);
        let frame = qgate_ipc::encode_message(MessageType::Async, &upd).expect("encodes");
        Request::new(Message::from_frame(frame, &Limits::default()).expect("a frame"))
            .expect("valid")
    }

    /// A table of `rows` rows with a column of each copied width, a sorted time column and the
    /// symbols chosen by `seed`.
    fn trades(rows: usize, seed: u64) -> K {
        let syms = ["AAPL", "MSFT", "IBM", "", "LSE.L"];
        let mut state = seed;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) as usize
        };
        let picks: Vec<&str> = (0..rows).map(|_| syms[next() % syms.len()]).collect();
        let mut time = Vector::new(VectorData::Timestamp((0..rows as i64).collect()));
        time.attr = Attr::Sorted;
        K::table(
            [
                "time", "sym", "ok", "id", "qty", "px", "venue", "flag", "cond",
            ],
            vec![
                K::Vector(time),
                K::symbols(picks),
                K::vector(VectorData::Boolean((0..rows).map(|i| i % 2 == 0).collect())),
                K::vector(VectorData::Guid((0..rows).map(|i| [i as u8; 16]).collect())),
                K::vector(VectorData::Int((0..rows as i32).collect())),
                K::vector(VectorData::Float(
                    (0..rows).map(|i| i as f64 / 4.0).collect(),
                )),
                K::symbols((0..rows).map(|i| if i % 3 == 0 { "N" } else { "LSE" })),
                K::vector(VectorData::Short((0..rows as i16).collect())),
                K::vector(VectorData::Char((0..rows).map(|i| b"ABC"[i % 3]).collect())),
            ],
        )
    }

    #[test]
    fn the_small_path_writes_what_the_general_rewrite_writes() {
        let filters = [
            filter(&["AAPL"], &[]),
            filter(&["AAPL", "IBM", ""], &[]),
            filter(&["NONE"], &[]),
            filter(&["AAPL", "MSFT", "IBM", "", "LSE.L"], &[]),
        ];
        for rows in [0, 1, 2, 7, 10, 63, 64] {
            for seed in 0..8 {
                let message = publication("trade", trades(rows, seed));
                for filter in &filters {
                    let small = filter
                        .apply_small(message.view().as_bytes())
                        .expect("a small update");
                    assert_eq!(
                        small,
                        filter.apply_general(&message),
                        "{rows} rows, seed {seed}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_small_path_leaves_the_rest_to_the_general_rewrite() {
        let aapl = filter(&["AAPL"], &["quote"]);
        // Over the row limit; no such column; not an update; a safe table passes.
        let large = publication("trade", trades(SMALL_MAX_ROWS + 1, 3));
        assert_eq!(aapl.apply_small(large.view().as_bytes()), None);
        let Applied::Changed(_) = aapl.apply(&large) else {
            panic!("the general rewrite filters it");
        };
        let no_sym = publication(
            "trade",
            K::table(["px"], vec![K::vector(VectorData::Float(vec![1.0]))]),
        );
        assert_eq!(aapl.apply_small(no_sym.view().as_bytes()), None);
        assert!(matches!(aapl.apply(&no_sym), Applied::Drop(why) if why.contains("no column")));
        let quote = publication("quote", trades(5, 1));
        assert_eq!(aapl.apply(&quote), Applied::Pass);
        let list = publication("trade", K::list(vec![K::symbols(["AAPL"])]));
        assert_eq!(aapl.apply_small(list.view().as_bytes()), None);
        // More symbol columns than the stack keeps.
        let names = ["sym", "a", "b", "c", "d"];
        let many = publication(
            "trade",
            K::table(
                names,
                names.iter().map(|_| K::symbols(["AAPL", "IBM"])).collect(),
            ),
        );
        assert_eq!(aapl.apply_small(many.view().as_bytes()), None);
        assert!(matches!(aapl.apply(&many), Applied::Changed(_)));
        // A removed column takes the general path.
        let mut remove = filter(&["AAPL"], &[]);
        remove.remove = vec![b"px".to_vec()];
        let message = publication("trade", trades(10, 2));
        assert_eq!(remove.apply_small(message.view().as_bytes()), None);
    }
}
