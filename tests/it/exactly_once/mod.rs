//! Every committed row change arrives in MongoDB exactly once: across restarts and kills of sdl,
//! MongoDB outages, network cuts, and transactions larger than one sink batch.

mod end_to_end;
mod forwarder;
mod large_transactions;
mod network;
