//! The initial snapshot (issue 16): which tables and keys (`selection`); tables read in
//! key-ordered chunks become documents equal to what the stream gives for the same rows
//! (`values`); consistent with the stream under writes and resumable across SIGKILL, SIGTERM and
//! MongoDB outages (`consistency`); asked for with `sdl snapshot`, and refused loudly for a table
//! it cannot key (`requests`).

mod consistency;
mod requests;
mod review;
mod selection;
mod values;
