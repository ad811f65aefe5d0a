//! The initial snapshot (issue 16): which tables and keys (`selection`).

mod selection;
