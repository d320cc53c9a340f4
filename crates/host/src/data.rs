//! What comes back from an upstream, as a plugin sees it: the `data-summary` of a reply or a
//! publication (its tables' names, columns, types and row counts, read in place), one column on
//! demand (`message.column`), and the `edit` verdict applied to the bytes.
//!
//! The tables of a value are the ones `qgate_ipc`'s table tools find, in the same order: a table,
//! a keyed table, each table of a dictionary of tables, or the rows of an `upd` publication.

use qgate_hooks::{Body, Request};
use qgate_ipc::{
    HEADER_LEN, Header, Limits, Message, MessageType, ValueView,
    table::{self, Mask, Rewritten, RowSelection, TableEdit, TableError},
};

use crate::bindings::types;

/// The summary of a reply or a publication, read in place: only names are copied.
pub(crate) fn summary(message: &Request) -> types::DataSummary {
    let view = message.view();
    let head = view
        .call()
        .map(|call| String::from_utf8_lossy(call.name()).into_owned());
    let tables = match table::locate(view.as_bytes(), view.endian()) {
        Ok(located) => located
            .tables()
            .iter()
            .map(|found| types::TableSummary {
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
    types::DataSummary {
        type_code: view.type_code(),
        size: view.as_bytes().len() as u64,
        head,
        tables,
    }
}

/// The column `name` of the `index`th table of `message`, as a little-endian message body.
pub(crate) fn column(
    message: &Request,
    index: u32,
    name: &[u8],
) -> wasmtime::Result<Option<Vec<u8>>> {
    let view = message.view();
    let Ok(located) = table::locate(view.as_bytes(), view.endian()) else {
        return Ok(None);
    };
    let Some(found) = usize::try_from(index)
        .ok()
        .and_then(|index| located.tables().get(index))
    else {
        return Ok(None);
    };
    let Some(column) = found.column(name) else {
        return Ok(None);
    };
    Ok(Some(crate::state::little_endian(ValueView::trusted(
        column.as_encoded(),
        view.endian(),
    ))?))
}

/// Applies a plugin's edits to `message`, the `i`th to its `i`th table: `None` when they change
/// nothing.
pub(crate) fn edit(message: &Request, edits: &[types::TableEdit]) -> Result<Option<Body>, String> {
    let view = message.view();
    let mut edits = edits.iter();
    let rewritten = table::rewrite(view.as_bytes(), view.endian(), |found| {
        edits
            .next()
            .map_or_else(|| Ok(TableEdit::default()), |edit| plan(edit, found.rows()))
    })
    .map_err(|error: EditError| error.0)?;
    match rewritten {
        Rewritten::NotATable | Rewritten::Unchanged => Ok(None),
        Rewritten::Changed(bytes) => Body::new(bytes)
            .map(Some)
            .map_err(|error| format!("the edited value is malformed: {error}")),
    }
}

/// A WIT table edit as the codec's, for a table of `rows` rows. A bitmap shorter than the table
/// keeps none of the rows it does not cover.
fn plan(edit: &types::TableEdit, rows: usize) -> Result<TableEdit, EditError> {
    let mut plan = TableEdit::default();
    if let Some(bits) = &edit.rows {
        plan.rows = Some(RowSelection::from_fn(rows, |row| {
            bits.get(row / 8)
                .is_some_and(|byte| byte & (1 << (row % 8)) != 0)
        }));
    }
    plan.drop = edit
        .remove
        .iter()
        .map(|name| name.as_str().into())
        .collect();
    for mask in &edit.mask {
        let value = match &mask.value {
            None => Mask::Null,
            Some(bytes) => mask_value(bytes).ok_or_else(|| {
                EditError(format!(
                    "the value masking column {:?} is not an atom or a string",
                    mask.column
                ))
            })?,
        };
        plan.mask.push((mask.column.as_str().into(), value));
    }
    plan.max_rows = edit
        .max_rows
        .map(|rows| usize::try_from(rows).unwrap_or(usize::MAX));
    Ok(plan)
}

/// Why an edit cannot be applied, in words.
struct EditError(String);

impl From<TableError> for EditError {
    fn from(error: TableError) -> Self {
        Self(error.to_string())
    }
}

/// A mask's value from its body: a string for a column of strings, else an atom.
fn mask_value(bytes: &[u8]) -> Option<Mask> {
    let view = ValueView::new(bytes, qgate_ipc::Endian::Little).ok()?;
    if let Some(text) = view.string() {
        return Some(Mask::Text(text.to_vec()));
    }
    view.atom().map(Mask::Value)
}

/// A message of `message_type` holding `body`, for the plugins later in the chain.
pub(crate) fn message(message_type: MessageType, body: &Body) -> Result<Request, String> {
    let len = HEADER_LEN + body.as_bytes().len();
    let len32 = u32::try_from(len).map_err(|_| format!("{len} bytes is too large"))?;
    let mut frame = Vec::with_capacity(len);
    frame.extend_from_slice(&Header::little(message_type, len32).to_bytes());
    frame.extend_from_slice(body.as_bytes());
    let message = Message::from_frame(frame, &Limits::new(len)).map_err(|e| e.to_string())?;
    Request::new(message).map_err(|error| error.to_string())
}
