//! Every committed row change arrives in MongoDB exactly once: across restarts and kills of sdl,
//! MongoDB outages, network cuts, transactions larger than one sink batch, and several sources
//! writing into one database at once.

mod end_to_end;
mod forwarder;
mod large_transactions;
mod many_sources;
mod network;
