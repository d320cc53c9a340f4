//! What comes back from an upstream, in gateway mode: [`DataCtx`], given to
//! [`Plugin::on_response`](crate::Plugin::on_response) and
//! [`Plugin::on_publication`](crate::Plugin::on_publication), and the table tools that filter
//! what it holds before the client gets it.
//!
//! A reply or a publication stays in the host until the plugin asks for it. Its
//! [`DataSummary`] tells the shape of its tables (names, columns, types, rows) without a copy;
//! [`DataCtx::column`] fetches one column (the entitlement column, say) and nothing else; and
//! the verdict [`DataVerdict::Edit`], built with [`Rows`] and [`EditBuilder`], has the host keep
//! rows, take out columns and mask columns in the bytes, copying each kept column once.
//!
//! ```
//! use qgate_plugin_sdk::data::{EditBuilder, Rows};
//! use qgate_plugin_sdk::DataVerdict;
//!
//! // Keep the rows whose `sym` is AAPL, take out `client`, mask `account`.
//! let syms = ["AAPL", "IBM", "AAPL"];
//! let rows = Rows::matching(syms.iter().map(|s| s.as_bytes()), |s| s == b"AAPL");
//! assert_eq!(rows.kept(), 2);
//! let verdict = EditBuilder::new()
//!     .rows(rows)
//!     .remove("client")
//!     .mask("account")
//!     .verdict();
//! assert!(matches!(verdict, DataVerdict::Edit(_)));
//! ```
//!
//! A plugin that would rather build the new value itself decodes it ([`DataCtx::value`]) or edits
//! its bytes in the guest with [`qgate_ipc::table`], and answers [`DataVerdict::Replace`].

use qgate_ipc::{Endian, K, ValueView, table};

use crate::{
    Session, Summary,
    bindings::qgate::plugin::types::{
        ColumnMask, DataSummary, DataVerdict, Message, TableEdit, TableSummary,
    },
    ctx::{MessageCtx, encode_or_null},
};

/// Where the reply's or publication's bytes are.
enum Data<'a> {
    /// In the host, fetched on demand.
    Host(&'a Message),
    /// In the guest: built by [`DataCtx::from_value`].
    Local(Vec<u8>),
}

/// What [`Plugin::on_response`](crate::Plugin::on_response) and
/// [`Plugin::on_publication`](crate::Plugin::on_publication) are given: the session, the request a
/// reply answers (none for a publication), and the reply or publication, fetched on demand.
pub struct DataCtx<'a> {
    session: Session,
    request: Option<MessageCtx<'a>>,
    summary: DataSummary,
    data: Data<'a>,
}

impl std::fmt::Debug for DataCtx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataCtx")
            .field("session", &self.session)
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

impl<'a> DataCtx<'a> {
    /// A context over a reply or a publication that stays in the host.
    pub(crate) fn host(
        session: Session,
        request: Option<(Summary, &'a Message)>,
        summary: DataSummary,
        message: &'a Message,
    ) -> Self {
        Self {
            request: request
                .map(|(summary, request)| MessageCtx::host_with(session.clone(), summary, request)),
            session,
            summary,
            data: Data::Host(message),
        }
    }

    /// A context over `value` as a reply to `request` (or, with no request, as a publication),
    /// with the summary the host would compute; for tests.
    pub fn from_value(session: Session, request: Option<&K>, value: &K) -> DataCtx<'static> {
        let bytes = encode_or_null(value);
        DataCtx {
            request: request.map(|request| MessageCtx::from_value(session.clone(), request)),
            session,
            summary: summarize(&bytes),
            data: Data::Local(bytes),
        }
    }

    /// The connection the reply or publication is going to.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The user (`.z.u`).
    pub fn user(&self) -> &str {
        &self.session.user
    }

    /// The request a reply answers, with its summary and facts; `None` for a publication.
    pub fn request(&self) -> Option<&MessageCtx<'a>> {
        self.request.as_ref()
    }

    /// Whether this is a publication rather than a reply.
    pub fn is_publication(&self) -> bool {
        self.request.is_none()
    }

    /// The host's summary: type, size, the head of a call, the tables.
    pub fn summary(&self) -> &DataSummary {
        &self.summary
    }

    /// The tables in the value, in the order an edit addresses them: one for a table, a keyed
    /// table or an `upd` publication, one per key for a dictionary of tables.
    pub fn tables(&self) -> &[TableSummary] {
        &self.summary.tables
    }

    /// Whether the value is a q error (the reply to a request that failed upstream).
    pub fn is_error(&self) -> bool {
        self.summary.type_code == qgate_ipc::type_code::ERROR
    }

    /// The column `name` of the `table`th table, fetched alone and decoded; `None` when there is
    /// no such table or column.
    pub fn column(&self, table: usize, name: &str) -> Option<K> {
        let bytes = self.column_bytes(table, name)?;
        qgate_ipc::decode(&bytes, Endian::Little).ok()
    }

    /// The column `name` of the `table`th table as a message body (a vector, or a general list),
    /// fetched alone: for [`Rows::of_symbols`], which reads symbols without decoding them.
    pub fn column_bytes(&self, table: usize, name: &str) -> Option<Vec<u8>> {
        match &self.data {
            Data::Host(message) => message.column(u32::try_from(table).ok()?, name),
            Data::Local(bytes) => local_column(bytes, table, name.as_bytes()),
        }
    }

    /// The whole value as a kdb+ IPC body (little-endian), copied from the host.
    pub fn body(&self) -> Vec<u8> {
        match &self.data {
            Data::Host(message) => message.body(),
            Data::Local(bytes) => bytes.clone(),
        }
    }

    /// The whole value, fetched and decoded.
    ///
    /// # Errors
    ///
    /// [`qgate_ipc::DecodeError`] when it does not decode within the decoder's memory budget.
    pub fn value(&self) -> Result<K, qgate_ipc::DecodeError> {
        qgate_ipc::decode(&self.body(), Endian::Little)
    }
}

/// A column of a value in the guest, as the host's `message.column` finds it.
fn local_column(bytes: &[u8], table: usize, name: &[u8]) -> Option<Vec<u8>> {
    let located = table::locate(bytes, Endian::Little).ok()?;
    let found = located.tables().get(table)?;
    let column = found.column(name)?;
    Some(column.as_encoded().to_vec())
}

/// The data summary the host computes for a body.
pub(crate) fn summarize(body: &[u8]) -> DataSummary {
    let view = ValueView::trusted(body, Endian::Little);
    let head = view
        .call()
        .map(|call| String::from_utf8_lossy(call.name()).into_owned());
    let tables = match table::locate(body, Endian::Little) {
        Ok(located) => located
            .tables()
            .iter()
            .map(|found| TableSummary {
                name: found
                    .name()
                    .map(|name| String::from_utf8_lossy(name).into_owned()),
                columns: found
                    .columns()
                    .filter_map(|column| column.name())
                    .map(|name| String::from_utf8_lossy(name).into_owned())
                    .collect(),
                types: found.columns().map(|column| column.type_code()).collect(),
                keys: u32::try_from(found.key_count()).unwrap_or(u32::MAX),
                rows: found.rows() as u64,
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    DataSummary {
        type_code: view.type_code(),
        size: body.len() as u64,
        head,
        tables,
    }
}

/// Which rows of a table stay: a bitmap, as the `edit` verdict carries it (row `i` stays when bit
/// `i % 8` of byte `i / 8` is set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rows {
    bits: Vec<u8>,
    rows: usize,
    kept: usize,
}

impl Rows {
    /// Every one of `rows` rows.
    pub fn all(rows: usize) -> Self {
        let mut bits = vec![0xff; rows.div_ceil(8)];
        if !rows.is_multiple_of(8)
            && let Some(last) = bits.last_mut()
        {
            *last = (1u8 << (rows % 8)) - 1;
        }
        Self {
            bits,
            rows,
            kept: rows,
        }
    }

    /// The rows whose value in a column (given in row order) satisfies `keep`.
    pub fn matching<'v>(
        values: impl IntoIterator<Item = &'v [u8]>,
        mut keep: impl FnMut(&'v [u8]) -> bool,
    ) -> Self {
        let mut bits = Vec::new();
        let mut rows = 0;
        let mut kept = 0;
        for value in values {
            if rows % 8 == 0 {
                bits.push(0);
            }
            if keep(value) {
                // Invariant: a byte was pushed for this row above.
                if let Some(byte) = bits.last_mut() {
                    *byte |= 1 << (rows % 8);
                }
                kept += 1;
            }
            rows += 1;
        }
        Self { bits, rows, kept }
    }

    /// The rows of a symbol column (a message body, as [`DataCtx::column_bytes`] gives it) whose
    /// symbol satisfies `keep`, read without decoding the column; `None` when the body is not a
    /// symbol vector.
    ///
    /// `keep` is asked once per distinct symbol, not once per row ([`table::NameAnswers`]), so it
    /// must depend on the symbol alone.
    pub fn of_symbols(column: &[u8], keep: impl FnMut(&[u8]) -> bool) -> Option<Self> {
        let view = ValueView::new(column, Endian::Little).ok()?;
        let mut answers = table::NameAnswers::new(keep);
        Some(Self::matching(view.symbols()?, |name| answers.get(name)))
    }

    /// How many rows the selection is over.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// How many rows stay.
    pub fn kept(&self) -> usize {
        self.kept
    }

    /// The bitmap.
    pub fn into_bits(self) -> Vec<u8> {
        self.bits
    }
}

/// Builds the edit of one table for [`DataVerdict::Edit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EditBuilder {
    edit: TableEdit,
}

impl Default for EditBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl EditBuilder {
    /// An edit that changes nothing.
    pub fn new() -> Self {
        Self {
            edit: TableEdit {
                rows: None,
                remove: Vec::new(),
                mask: Vec::new(),
                max_rows: None,
            },
        }
    }

    /// Keeps only these rows.
    pub fn rows(mut self, rows: Rows) -> Self {
        self.edit.rows = Some(rows.into_bits());
        self
    }

    /// Takes out a column.
    pub fn remove(mut self, column: impl Into<String>) -> Self {
        self.edit.remove.push(column.into());
        self
    }

    /// Replaces every value of a column with its type's null (an empty string in a column of
    /// strings).
    pub fn mask(mut self, column: impl Into<String>) -> Self {
        self.edit.mask.push(ColumnMask {
            column: column.into(),
            value: None,
        });
        self
    }

    /// Replaces every value of a column with `value`, an atom of the column's type.
    pub fn fill(mut self, column: impl Into<String>, value: &K) -> Self {
        self.edit.mask.push(ColumnMask {
            column: column.into(),
            value: Some(encode_or_null(value)),
        });
        self
    }

    /// Keeps at most `rows` rows, the first ones after the row filter.
    pub fn max_rows(mut self, rows: u64) -> Self {
        self.edit.max_rows = Some(rows);
        self
    }

    /// Whether the edit changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::new()
    }

    /// The edit.
    pub fn build(self) -> TableEdit {
        self.edit
    }

    /// The verdict that applies this edit to the only (or first) table.
    pub fn verdict(self) -> DataVerdict {
        DataVerdict::Edit(vec![self.edit])
    }
}

impl DataVerdict {
    /// Sends `value` instead; a value that cannot be encoded becomes a deny saying so.
    pub fn replace(value: &K) -> Self {
        let mut body = Vec::new();
        match qgate_ipc::encode(value, &mut body) {
            Ok(()) => Self::Replace(body),
            Err(err) => Self::Deny(format!("replace: {err}")),
        }
    }

    /// Refuses with the q error `message` (a reply), or drops the publication.
    pub fn deny(message: impl Into<String>) -> Self {
        Self::Deny(message.into())
    }
}
