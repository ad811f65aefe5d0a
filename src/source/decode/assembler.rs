//! The transaction assembler: binlog events in, whole transactions (or bounded fragments of them)
//! out. It keeps the position, the open transaction, the TABLE_MAPs of that transaction and the
//! schemas provided for tables without names; each kind of event is handled here or, for row
//! events, statements and MariaDB GTIDs, in its own module ([`super::rows`], [`super::statement`],
//! [`super::mariadb`]). The guarantees are the decoder's (see [`super`]).

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use mysql_async::binlog::events::{Event, EventData, GtidEvent, RotateEvent};
use mysql_async::binlog::EventType;

use super::mariadb::{mariadb_event, parse_mariadb_gtid};
use super::payload::{inner_events, InnerEvent};
use super::table_map::{table_info, TableInfo, TableSchema};
use super::{event_type_name, panic_text, shorten, AssemblerMode, DecodeError, FragmentLimits};
use crate::event::{Change, SourceTransaction};
use crate::gtid::{
    MariadbGtid, MariadbPosition, MysqlGtidSet, PartialTransaction, Position, ResumePoint,
};

/// The most provided table schemas kept (see [`TransactionAssembler::provide_schema`]).
pub const MAX_CACHED_SCHEMAS: usize = 4096;

pub(super) struct OpenTransaction {
    pub(super) gtid: String,
    pub(super) timestamp: u32,
    /// True for a MariaDB standalone event group (DDL): it ends after its one statement.
    pub(super) standalone: bool,
    /// Changes not yet returned (in a fragment), with their approximate size.
    pub(super) changes: Vec<Change>,
    pub(super) bytes: usize,
    /// Ordinal of `changes[0]` in the transaction.
    pub(super) fragment_first: u64,
    /// Ordinal the next change gets (= changes seen so far, including dropped ones).
    pub(super) next_ordinal: u64,
    /// Changes with a lower ordinal are already saved (a resumed partial transaction): dropped.
    pub(super) skip_below: u64,
    /// What the transaction adds to the position when it commits (the assembler's position is
    /// the position before it until then: no copy of a large GTID set is made per transaction).
    pub(super) step: PositionStep,
}

/// How a transaction moves the position.
pub(super) enum PositionStep {
    Mariadb(MariadbGtid),
    Mysql {
        source: String,
        gno: u64,
    },
    /// File mode: a transaction without a GTID does not move it.
    None,
}

impl OpenTransaction {
    pub(super) fn push(&mut self, change: Change) {
        let ordinal = self.next_ordinal;
        self.next_ordinal += 1;
        if ordinal < self.skip_below {
            return;
        }
        if self.changes.is_empty() {
            self.fragment_first = ordinal;
        }
        self.bytes += change.approximate_size();
        self.changes.push(change);
    }
}

/// Turns a stream of binlog events into complete transactions.
pub struct TransactionAssembler {
    pub(super) mode: AssemblerMode,
    pub(super) file: Arc<str>,
    pub(super) position: Position,
    pub(super) table_maps: HashMap<u64, TableInfo>,
    /// Schemas provided for TABLE_MAPs without names, by (database, table).
    pub(super) schemas: HashMap<(String, String), TableSchema>,
    pub(super) open: Option<OpenTransaction>,
    pub(super) limits: FragmentLimits,
    /// Set by [`Self::resume_inside`] until the next transaction begins.
    pub(super) resume_partial: Option<PartialTransaction>,
    /// Events still expected from the last TRANSACTION_PAYLOAD, with its position.
    pub(super) payload: VecDeque<InnerEvent>,
    pub(super) payload_at: u64,
}

impl TransactionAssembler {
    /// Starts assembling a live stream after `position` (the position of the last transaction
    /// already saved).
    pub fn new(position: Position) -> Self {
        Self::with_mode(position, AssemblerMode::Live)
    }

    pub fn with_mode(position: Position, mode: AssemblerMode) -> Self {
        Self {
            mode,
            file: Arc::from(""),
            position,
            table_maps: HashMap::new(),
            schemas: HashMap::new(),
            open: None,
            limits: FragmentLimits::WHOLE,
            resume_partial: None,
            payload: VecDeque::new(),
            payload_at: 0,
        }
    }

    /// Returns large transactions in fragments within `limits`.
    pub fn with_fragments(mut self, limits: FragmentLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The stream resumes before `partial`, whose first `saved_changes` changes are already saved:
    /// the next transaction must be that one, and those changes are dropped.
    pub fn resume_inside(&mut self, partial: PartialTransaction) {
        self.resume_partial = Some(partial);
    }

    /// Provides names for a table whose TABLE_MAPs carry none (see
    /// [`table_without_names`](super::table_without_names)).
    /// At most [`MAX_CACHED_SCHEMAS`] are kept: when a new one would exceed that, the cache is
    /// emptied and refilled on demand (each table is then looked up again when its rows next
    /// arrive), so memory stays bounded whatever the number of tables.
    pub fn provide_schema(&mut self, database: String, table: String, schema: TableSchema) {
        if self.schemas.len() >= MAX_CACHED_SCHEMAS {
            self.schemas.clear();
        }
        self.schemas.insert((database, table), schema);
    }

    /// How many TABLE_MAPs and provided schemas are cached (for tests of the bounds).
    pub fn cached_tables(&self) -> (usize, usize) {
        (self.table_maps.len(), self.schemas.len())
    }

    pub fn has_schema(&self, database: &str, table: &str) -> bool {
        self.schemas
            .contains_key(&(database.to_string(), table.to_string()))
    }

    /// Drops every provided schema (after a DDL statement, which may have changed any of them).
    pub fn forget_schemas(&mut self) {
        self.schemas.clear();
    }

    /// Names the binlog file being read (file decoding has no ROTATE event to name it).
    pub fn set_file(&mut self, file: &str) {
        self.file = Arc::from(file);
    }

    /// Called at the end of a binlog file: an open transaction or missing TRANSACTION_PAYLOAD
    /// events mean the input ended early.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if !self.payload.is_empty() {
            return Err(DecodeError {
                file: self.file.to_string(),
                pos: self.payload_at,
                event_type: "TRANSACTION_PAYLOAD".into(),
                table: String::new(),
                reason: format!(
                    "the input ended with {} of its inner events missing",
                    self.payload.len()
                ),
            });
        }
        if let Some(open) = &self.open {
            return Err(DecodeError {
                file: self.file.to_string(),
                pos: 0,
                event_type: "END".into(),
                table: String::new(),
                reason: format!(
                    "the input ended inside transaction {} (no commit followed)",
                    open.gtid
                ),
            });
        }
        Ok(())
    }

    /// The position after the last transaction this assembler returned.
    pub fn position(&self) -> &Position {
        &self.position
    }

    /// Feeds one event. Returns a transaction when this event completed one.
    pub fn feed(&mut self, event: &Event) -> Result<Option<SourceTransaction>, DecodeError> {
        let header = event.header();
        let raw_type = header.event_type_raw();
        let event_start =
            u64::from(header.log_pos()).saturating_sub(u64::from(header.event_size()));

        if let Some(expected) = self.payload.pop_front() {
            let got = InnerEvent {
                event_type: raw_type,
                size: header.event_size(),
            };
            if got != expected {
                self.payload.clear();
                return Err(DecodeError {
                    file: self.file.to_string(),
                    pos: self.payload_at,
                    event_type: "TRANSACTION_PAYLOAD".into(),
                    table: String::new(),
                    reason: format!(
                        "its inner events did not follow it (expected {} of {} bytes, got {} of {} \
                         bytes): the binlog client failed to decompress the payload; nothing \
                         after this point was relayed",
                        event_type_name(expected.event_type),
                        expected.size,
                        event_type_name(got.event_type),
                        got.size
                    ),
                });
            }
        }

        match raw_type {
            mariadb_event::GTID => {
                let (gtid, standalone) = parse_mariadb_gtid(event.data(), header.server_id())
                    .and_then(|parsed| parsed.transaction())
                    .map_err(|reason| self.error(event, "MARIADB_GTID", reason))?;
                let step = PositionStep::Mariadb(gtid);
                return self
                    .begin(event, gtid.to_string(), standalone, step)
                    .map(|()| None);
            }
            mariadb_event::ANNOTATE_ROWS
            | mariadb_event::BINLOG_CHECKPOINT
            | mariadb_event::GTID_LIST => return Ok(None),
            mariadb_event::START_ENCRYPTION => return Err(self.error(
                event,
                "START_ENCRYPTION",
                "the binlog is encrypted (encrypt_binlog=ON); sdl reads unencrypted binlogs only: \
                     set encrypt_binlog=OFF on the source"
                    .into(),
            )),
            t if t == mariadb_event::QUERY_COMPRESSED
                || (mariadb_event::ROWS_COMPRESSED_FIRST..=mariadb_event::ROWS_COMPRESSED_LAST)
                    .contains(&t) =>
            {
                return Err(self.error(
                    event,
                    &format!("MARIADB_COMPRESSED({t})"),
                    "MariaDB binlog compression (log_bin_compress=ON) is not supported: set \
                     log_bin_compress=OFF on the source"
                        .into(),
                ))
            }
            _ => {}
        }

        if raw_type == EventType::PREVIOUS_GTIDS_EVENT as u8 {
            // mysql_common allocates room for the declared number of GTID sources before reading
            // them; a damaged count would abort the process (an allocation failure cannot be
            // caught). Each source takes at least 16 bytes.
            let body = event.data();
            let declared = body.get(..8).map(|b| {
                let header = u64::from_le_bytes(b.try_into().expect("8 bytes"));
                // Untagged: 56-bit count; tagged (format byte set): count in bits 8..56.
                if header >> 56 != 0 {
                    (header >> 8) & ((1 << 48) - 1)
                } else {
                    header & ((1 << 56) - 1)
                }
            });
            if declared.is_none_or(|n| n > body.len() as u64 / 16) {
                return Err(self.error(
                    event,
                    "PREVIOUS_GTIDS_EVENT",
                    format!(
                        "declares {declared:?} GTID sources in a {}-byte body",
                        body.len()
                    ),
                ));
            }
        }
        let data = catch_unwind(AssertUnwindSafe(|| event.read_data())).map_err(|panic| {
            self.error(
                event,
                &event_type_name(raw_type),
                format!("event decoder panicked: {}", panic_text(&panic)),
            )
        })?;
        let data = match data {
            Ok(Some(data)) => data,
            Ok(None) => {
                return Err(self.error(
                    event,
                    &format!("UNKNOWN({raw_type})"),
                    "unknown event type; this sdl cannot interpret it and will not skip it".into(),
                ))
            }
            Err(e) => {
                let name = event_type_name(raw_type);
                return Err(self.error(event, &name, format!("malformed event: {e}")));
            }
        };

        match data {
            EventData::RotateEvent(rotate) => {
                self.file = Arc::from(clean_binlog_name(&rotate));
                // Table ids are only valid within the file (and each transaction maps its
                // tables again anyway).
                self.table_maps.clear();
                Ok(None)
            }
            EventData::FormatDescriptionEvent(_)
            | EventData::HeartbeatEvent
            | EventData::PreviousGtidsEvent(_)
            | EventData::StopEvent
            | EventData::RowsQueryEvent(_)
            | EventData::IntvarEvent(_)
            | EventData::RandEvent(_)
            | EventData::UserVarEvent(_) => Ok(None),
            EventData::TransactionPayloadEvent(payload) => {
                let inner = inner_events(&payload)
                    .map_err(|reason| self.error(event, "TRANSACTION_PAYLOAD", reason))?;
                self.payload = inner.into();
                self.payload_at = event_start;
                Ok(None)
            }
            EventData::GtidEvent(gtid) => self.begin_mysql(event, &gtid).map(|()| None),
            EventData::AnonymousGtidEvent(_) if self.mode == AssemblerMode::File => {
                let gtid = format!("anonymous@{}:{event_start}", self.file);
                self.begin(event, gtid, true, PositionStep::None)
                    .map(|()| None)
            }
            EventData::AnonymousGtidEvent(_) => Err(self.error(
                event,
                "ANONYMOUS_GTID",
                "the source writes transactions without GTIDs; set gtid_mode=ON and \
                 enforce_gtid_consistency=ON on the source"
                    .into(),
            )),
            EventData::TableMapEvent(tme) => {
                let provided = self.schemas.get(&(
                    tme.database_name().into_owned(),
                    tme.table_name().into_owned(),
                ));
                let info = table_info(tme.into_owned(), self.mode, provided).map_err(
                    |(table, reason)| {
                        let mut e = self.error(event, "TABLE_MAP_EVENT", reason);
                        e.table = table;
                        e
                    },
                )?;
                self.table_maps.insert(info.map.table_id(), info);
                Ok(None)
            }
            EventData::QueryEvent(query) => {
                let schema = query.schema().into_owned();
                // Secrets (CREATE USER … IDENTIFIED BY 'x', …) are redacted here, before the text
                // reaches the WAL, MongoDB, errors or logs (src/redact.rs).
                let text = crate::redact::redact_statement(&query.query()).into_owned();
                self.on_query(event, event_start, schema, text)
            }
            EventData::XidEvent(_) => self.commit(event),
            EventData::RowsEvent(rows) => self.on_rows(event, event_start, &rows),
            EventData::IncidentEvent(incident) => Err(self.error(
                event,
                "INCIDENT_EVENT",
                format!(
                    "the source recorded an incident ({incident:?}): changes may be missing from \
                     its binlog, so sdl cannot relay past this point; re-seed from a consistent \
                     state"
                ),
            )),
            EventData::XaPrepareLogEvent(_) => Err(self.error(
                event,
                "XA_PREPARE",
                "XA transactions are not supported; nothing after this point was relayed".into(),
            )),
            other => Err(self.error(
                event,
                &event_type_name(raw_type),
                format!(
                    "this event type carries no row images sdl can relay (statement-based LOAD \
                     DATA, pre-GA row events, or a newer event kind); event body: {}",
                    shorten(&format!("{other:?}"))
                ),
            )),
        }
    }

    pub(super) fn begin(
        &mut self,
        event: &Event,
        gtid: String,
        standalone: bool,
        step: PositionStep,
    ) -> Result<(), DecodeError> {
        if let Some(open) = &self.open {
            return Err(self.error(
                event,
                "GTID",
                format!(
                    "transaction {gtid} begins before transaction {} committed",
                    open.gtid
                ),
            ));
        }
        let mut skip_below = 0;
        if let Some(partial) = self.resume_partial.take() {
            if partial.gtid != gtid {
                return Err(self.error(
                    event,
                    "GTID",
                    format!(
                        "the WAL holds the first {} changes of transaction {} and the stream was \
                         resumed before it, but the next transaction is {gtid}: the source's \
                         binlog does not match the WAL (was the source restored or re-seeded?). \
                         Move the WAL directory away and start again with source.start set",
                        partial.saved_changes, partial.gtid
                    ),
                ));
            }
            skip_below = partial.saved_changes;
        }
        self.open = Some(OpenTransaction {
            gtid,
            timestamp: event.header().timestamp(),
            standalone,
            changes: Vec::new(),
            bytes: 0,
            fragment_first: 0,
            next_ordinal: 0,
            skip_below,
            step,
        });
        Ok(())
    }

    /// File mode: a transaction without a GTID event.
    pub(super) fn begin_anonymous(
        &mut self,
        event: &Event,
        event_start: u64,
        standalone: bool,
    ) -> Result<(), DecodeError> {
        let gtid = format!("anonymous@{}:{event_start}", self.file);
        self.begin(event, gtid, standalone, PositionStep::None)
    }

    fn begin_mysql(&mut self, event: &Event, gtid: &GtidEvent) -> Result<(), DecodeError> {
        let uuid = format_uuid(&gtid.sid());
        let source = match gtid.tag() {
            Some(tag) => format!("{uuid}:{tag}"),
            None => uuid,
        };
        // A MySQL transaction that does not start with BEGIN is a single DDL statement.
        self.begin(
            event,
            format!("{source}:{}", gtid.gno()),
            true,
            PositionStep::Mysql {
                source,
                gno: gtid.gno(),
            },
        )?;
        Ok(())
    }

    /// Takes the open transaction's pending changes as a fragment once they reach the limits.
    /// Called before more changes are added, so the transaction's last change always stays for
    /// the record that ends it.
    pub(super) fn full_fragment(&mut self) -> Option<SourceTransaction> {
        let open = self.open.as_mut()?;
        if open.changes.is_empty()
            || (open.changes.len() < self.limits.max_changes && open.bytes < self.limits.max_bytes)
        {
            return None;
        }
        let resume = ResumePoint {
            position: self.position.clone(),
            partial: Some(PartialTransaction {
                gtid: open.gtid.clone(),
                saved_changes: open.next_ordinal,
            }),
            snapshot: None,
        };
        let fragment = SourceTransaction {
            gtid: open.gtid.clone(),
            timestamp: open.timestamp,
            position_after: resume.to_string(),
            first_change: open.fragment_first,
            ends_transaction: false,
            changes: std::mem::take(&mut open.changes),
        };
        open.bytes = 0;
        open.fragment_first = open.next_ordinal;
        Some(fragment)
    }

    pub(super) fn commit(
        &mut self,
        event: &Event,
    ) -> Result<Option<SourceTransaction>, DecodeError> {
        let Some(open) = self.open.take() else {
            return Err(self.error(
                event,
                &event_type_name(event.header().event_type_raw()),
                "commit without a transaction (no GTID event began one)".into(),
            ));
        };
        // Every transaction writes the TABLE_MAPs of its own row events, so none is needed past
        // its commit: the cache holds at most one transaction's tables, whatever the number of
        // tables in the source or their table ids (which grow with every reopen and ALTER).
        self.table_maps.clear();
        if open.next_ordinal < open.skip_below {
            return Err(self.error(
                event,
                "COMMIT",
                format!(
                    "transaction {} has {} changes in the binlog, but the WAL already holds {}: the \
                     source's binlog does not match the WAL. Move the WAL directory away and start \
                     again with source.start set",
                    open.gtid, open.next_ordinal, open.skip_below
                ),
            ));
        }
        match open.step {
            PositionStep::Mariadb(gtid) => {
                if !matches!(self.position, Position::Mariadb(_)) {
                    self.position = Position::Mariadb(MariadbPosition::default());
                }
                if let Position::Mariadb(p) = &mut self.position {
                    p.advance(gtid);
                }
            }
            PositionStep::Mysql { source, gno } => {
                if !matches!(self.position, Position::Mysql(_)) {
                    self.position = Position::Mysql(MysqlGtidSet::default());
                }
                if let Position::Mysql(set) = &mut self.position {
                    set.add(&source, gno);
                }
            }
            PositionStep::None => {}
        }
        let first_change = if open.changes.is_empty() {
            open.next_ordinal
        } else {
            open.fragment_first
        };
        Ok(Some(SourceTransaction {
            gtid: open.gtid,
            timestamp: open.timestamp,
            position_after: self.position.to_string(),
            first_change,
            ends_transaction: true,
            changes: open.changes,
        }))
    }

    pub(super) fn error(&self, event: &Event, event_type: &str, reason: String) -> DecodeError {
        let header = event.header();
        DecodeError {
            file: self.file.to_string(),
            pos: u64::from(header.log_pos()).saturating_sub(u64::from(header.event_size())),
            event_type: event_type.to_string(),
            table: String::new(),
            reason,
        }
    }
}

/// The artificial first ROTATE event is sent before the checksum algorithm is known, so its name
/// can carry the 4 checksum bytes. Binlog names end in `.` and digits: cut anything after them.
fn clean_binlog_name(rotate: &RotateEvent<'_>) -> String {
    let name = rotate.name().into_owned();
    if let Some(dot) = name.rfind('.') {
        let digits = name[dot + 1..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        if digits > 0 {
            return name[..dot + 1 + digits].to_string();
        }
    }
    name.trim_end_matches(|c: char| c.is_control()).to_string()
}

fn format_uuid(sid: &[u8; 16]) -> String {
    let hex: String = sid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
