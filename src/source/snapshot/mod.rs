//! The initial snapshot's stage of the ingester: which tables and keys (`select`), and the
//! request files of `sdl snapshot` (`requests`).
pub mod requests;
pub mod select;
