//! The initial snapshot (issue 16): consistent with the stream under writes, resumable across
//! SIGKILL, SIGTERM and MongoDB outages, asked for with `sdl snapshot`, and refused loudly for a
//! table it cannot key.

mod consistency;
mod requests;
