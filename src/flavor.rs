//! Which server family the source is: MariaDB or MySQL. It decides how GTID positions are written
//! and parsed (`gtid`), how the binlog stream is requested and which settings are required.

/// The source server's family, told from its `version` variable at connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Mariadb,
    Mysql,
}

impl Flavor {
    /// The source's flavor as its vendor writes it (`MariaDB`, `MySQL`), for messages and logs.
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Mariadb => "MariaDB",
            Flavor::Mysql => "MySQL",
        }
    }
}
