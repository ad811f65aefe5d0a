//! The initial snapshot (issue 16): which tables and keys (`selection`); tables read in
//! key-ordered chunks become documents equal to what the stream gives for the same rows
//! (`values`).

mod selection;
mod values;
