//! The ingester's snapshot stage (issue 16): reading tables in key-ordered chunks ([`read`]).

pub mod read;
