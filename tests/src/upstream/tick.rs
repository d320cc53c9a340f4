//! The upstream's tickerplant side: its tables, their schema, subscription filters and the rows
//! `publish` sends.

use std::time::{SystemTime, UNIX_EPOCH};

use qgate_ipc::{Atom, K, VectorData};

/// The tables a subscriber can subscribe to and `publish` publishes to (kdb+tick's `.u.t`).
pub const TABLES: [&str; 2] = ["trade", "quote"];

/// The syms published rows cycle through, by `seq`.
pub const SYMS: [&str; 5] = ["AAPL", "MSFT", "IBM", "GOOG", "LSE.L"];

/// The columns of every table, in order.
const COLUMNS: [&str; 5] = ["time", "sym", "price", "size", "seq"];

/// The nanoseconds in a day: `time` is the time of day.
const NANOS_PER_DAY: u128 = 86_400 * 1_000_000_000;

/// The table called `name`, as the `'static` name the subscriptions are keyed by.
pub(crate) fn table(name: &[u8]) -> Option<&'static str> {
    TABLES.into_iter().find(|table| table.as_bytes() == name)
}

/// The syms a subscriber wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Filter {
    /// Every sym (`` ` ``).
    All,
    /// Only these.
    Only(Vec<Vec<u8>>),
}

impl Filter {
    /// The filter for `.u.sub`'s second argument: `` ` `` for all, a symbol, or a symbol list.
    pub(crate) fn parse(syms: &K) -> Option<Self> {
        match syms {
            K::Atom(Atom::Symbol(name)) if name.is_empty() => Some(Self::All),
            K::Atom(Atom::Symbol(name)) => Some(Self::Only(vec![name.clone()])),
            K::Vector(vector) => match &vector.data {
                VectorData::Symbol(names) => {
                    Some(Self::Only(names.iter().map(<[u8]>::to_vec).collect()))
                }
                _ => None,
            },
            // An empty general list is an empty symbol list that lost its type on the way.
            K::List(list) if list.items.is_empty() => Some(Self::Only(Vec::new())),
            _ => None,
        }
    }

    fn wants(&self, sym: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(syms) => syms.iter().any(|s| s.as_slice() == sym.as_bytes()),
        }
    }
}

/// An empty table with the columns of every table.
pub(crate) fn schema() -> K {
    Rows::default().table()
}

/// The rows of one publication, before filtering.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    time: Vec<i64>,
    sym: Vec<&'static str>,
    price: Vec<f64>,
    size: Vec<i64>,
    seq: Vec<i64>,
}

impl Rows {
    /// `count` rows with the `seq` numbers from `first`, all at the time of day now.
    pub(crate) fn new(first: i64, count: usize) -> Self {
        let time = time_of_day();
        let mut rows = Self::default();
        for seq in (first..).take(count) {
            let cycle = seq.rem_euclid(1000);
            rows.time.push(time);
            rows.sym
                .push(SYMS[seq.rem_euclid(SYMS.len() as i64) as usize]);
            rows.price.push(100.0 + cycle as f64 / 4.0);
            rows.size.push(100 * (1 + seq.rem_euclid(10)));
            rows.seq.push(seq);
        }
        rows
    }

    /// The rows `filter` wants, as a table; `None` when it wants none of them.
    pub(crate) fn select(&self, filter: &Filter) -> Option<K> {
        if *filter == Filter::All {
            return (!self.seq.is_empty()).then(|| self.table());
        }
        let keep: Vec<usize> = (0..self.seq.len())
            .filter(|&i| filter.wants(self.sym[i]))
            .collect();
        if keep.is_empty() {
            return None;
        }
        let rows = Self {
            time: keep.iter().map(|&i| self.time[i]).collect(),
            sym: keep.iter().map(|&i| self.sym[i]).collect(),
            price: keep.iter().map(|&i| self.price[i]).collect(),
            size: keep.iter().map(|&i| self.size[i]).collect(),
            seq: keep.iter().map(|&i| self.seq[i]).collect(),
        };
        Some(rows.table())
    }

    fn table(&self) -> K {
        K::table(
            COLUMNS,
            vec![
                K::vector(VectorData::Timespan(self.time.clone())),
                K::symbols(&self.sym),
                K::vector(VectorData::Float(self.price.clone())),
                K::vector(VectorData::Long(self.size.clone())),
                K::vector(VectorData::Long(self.seq.clone())),
            ],
        )
    }
}

/// The time of day in UTC, in nanoseconds (q's `.z.N` on a machine set to UTC).
fn time_of_day() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    // Invariant: the remainder is below NANOS_PER_DAY, which fits an i64.
    i64::try_from(since_epoch % NANOS_PER_DAY).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(filter: &Filter, first: i64, count: usize, expect: Option<&[i64]>) {
        let rows = Rows::new(first, count);
        let selected = rows.select(filter);
        let seqs = selected.as_ref().map(|table| match table {
            K::Table(table) => match table.column(b"seq") {
                Some(K::Vector(vector)) => match &vector.data {
                    VectorData::Long(seq) => seq.clone(),
                    other => panic!("seq is {other:?}"),
                },
                other => panic!("seq is {other:?}"),
            },
            other => panic!("not a table: {other:?}"),
        });
        assert_eq!(seqs.as_deref(), expect);
    }

    #[test]
    fn filters_rows_by_sym() {
        let ibm = Filter::Only(vec![b"IBM".to_vec()]);
        let two = Filter::Only(vec![b"AAPL".to_vec(), b"LSE.L".to_vec()]);
        check(&Filter::All, 0, 3, Some(&[0, 1, 2]));
        check(&Filter::All, 0, 0, None);
        check(&ibm, 0, 10, Some(&[2, 7]));
        check(&ibm, 3, 4, None);
        check(&two, 0, 6, Some(&[0, 4, 5]));
        check(&Filter::Only(Vec::new()), 0, 6, None);
    }

    #[test]
    fn parses_sub_filters() {
        assert_eq!(Filter::parse(&K::symbol("")), Some(Filter::All));
        assert_eq!(
            Filter::parse(&K::symbol("IBM")),
            Some(Filter::Only(vec![b"IBM".to_vec()]))
        );
        assert_eq!(
            Filter::parse(&K::symbols(["A", "B"])),
            Some(Filter::Only(vec![b"A".to_vec(), b"B".to_vec()]))
        );
        assert_eq!(Filter::parse(&K::long(1)), None);
    }

    #[test]
    fn schema_is_an_empty_table_of_typed_columns() {
        let K::Table(table) = schema() else {
            panic!("not a table")
        };
        assert_eq!(table.row_count(), 0);
        assert_eq!(
            table.column(b"time"),
            Some(&K::vector(VectorData::Timespan(Vec::new())))
        );
        assert_eq!(table.column(b"sym"), Some(&K::symbols(Vec::<&str>::new())));
    }
}
