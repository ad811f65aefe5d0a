//! What ships: the systemd units and example config, the Prometheus alert rules, the Debian
//! package (gated: run by `scripts/package --test`), and the scripts' cargo targets.

mod alerts;
mod files;
mod package;
mod scripts;
