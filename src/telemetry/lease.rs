//! What the lease phase publishes (`[lease]`, a hot standby): this instance's role and the lease
//! as it last saw it, for `/status`, `/readyz`, `/metrics` and systemd's status line.

use serde::Serialize;

/// This instance's part in a hot standby pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// `[lease]` is off: this sdl relays without a lease.
    Single,
    /// Looking at the lease for the first time (MongoDB not answered yet).
    Starting,
    /// Another instance holds the lease; this one waits, connected, and does not read the binlog.
    Standby,
    /// This instance holds the lease and relays.
    Leader,
    /// This instance found its lease taken over and is stopping.
    SteppedDown,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Single => "single",
            Role::Starting => "starting",
            Role::Standby => "standby",
            Role::Leader => "leader",
            Role::SteppedDown => "stepped_down",
        }
    }
}

/// The lease as this instance last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseStatus {
    pub role: Role,
    /// `lease.instance`: this instance's name.
    pub instance: String,
    /// The lease's epoch (incremented at every takeover); this instance's own while it leads.
    pub epoch: Option<i64>,
    /// The instance name of the lease's holder (`None`: nobody, or released).
    pub holder_instance: Option<String>,
    /// While a standby: since when it has been waiting (RFC 3339, UTC).
    pub waiting_since: Option<String>,
    /// While leading: when this instance took the lease (RFC 3339, UTC).
    pub leader_since: Option<String>,
    /// While leading: since when the lease has gone unrenewed past `lease.duration` (MongoDB
    /// does not answer this instance; a standby that reaches it may take over). `None` otherwise.
    pub unconfirmed_since: Option<String>,
    /// The last failure to read or renew the lease, if any since the last success.
    pub last_error: Option<super::LastError>,
}

impl LeaseStatus {
    /// The state before the lease phase runs: `single` when `[lease]` is off.
    pub fn initial(enabled: bool, instance: &str) -> Self {
        Self {
            role: if enabled {
                Role::Starting
            } else {
                Role::Single
            },
            instance: instance.to_string(),
            epoch: None,
            holder_instance: None,
            waiting_since: None,
            leader_since: None,
            unconfirmed_since: None,
            last_error: None,
        }
    }
}
