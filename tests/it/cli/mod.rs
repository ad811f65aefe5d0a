//! The command line as an operator meets it: the commands, the config's bounds, `sdl check`,
//! bad input of every kind, and what a first-time operator hit.

mod bad_input;
mod commands;
mod config_bounds;
mod first_hour;
mod preflight;
