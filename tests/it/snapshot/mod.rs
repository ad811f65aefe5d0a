//! The initial snapshot (issue 16): tables read in key-ordered chunks become documents equal to
//! what the stream gives for the same rows.

mod values;
