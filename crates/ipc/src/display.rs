//! q syntax for values: what `show` or the console would print, used by `qgate decode`.

use std::fmt;

use crate::value::K;

impl fmt::Display for K {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}
