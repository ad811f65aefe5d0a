//! Binlog events → whole source transactions.
//!
//! The [`TransactionAssembler`] is fed binlog events one at a time, from the network stream or from a
//! binlog file alike, and returns a [`SourceTransaction`] each time one is complete. It guarantees:
//! - a transaction is returned only when its commit (XID, `COMMIT` query, or the end of a standalone
//!   DDL) has been seen, with its row changes in binlog order;
//! - the position carried by a transaction includes that transaction and every earlier one;
//! - with [`FragmentLimits`], a transaction is returned in fragments of bounded size as it is read
//!   (each fragment but the last carries the position before the transaction and the count of its
//!   changes returned so far), so memory does not grow with transaction size; after
//!   [`TransactionAssembler::resume_inside`], the first changes of the named transaction, which the
//!   WAL already holds, are decoded and dropped, so every change is returned exactly once;
//! - an event it cannot turn into change events is an [`DecodeError`] naming the binlog file,
//!   position, event type (and table, for row events). Nothing is skipped silently: the only events
//!   passed over are those that carry no row data (heartbeats, checkpoints, GTID lists, annotations,
//!   and `SAVEPOINT` / `ROLLBACK TO SAVEPOINT` / `RELEASE SAVEPOINT` statements inside a transaction,
//!   whose effect is already in the row events that follow them);
//! - a TRANSACTION_PAYLOAD event (MySQL binlog compression) is decompressed here too, and the events
//!   inside it must follow it one by one: a client that failed to decompress it (mysql_async passes
//!   over such a failure) is caught by the next event not being the expected inner one;
//! - column values are exact ([`convert_value`]): strings in the column's charset from the TABLE_MAP
//!   metadata, ENUM and SET by their names, JSON structured with exact numbers;
//! - malformed input (from a damaged file or a fuzzer) is an error, never a panic: TABLE_MAP column
//!   metadata is validated before rows are decoded with it, and a panic inside `mysql_common`'s row
//!   decoder is caught and reported as a [`DecodeError`].
//!
//! - a row change logged as a statement (INSERT/UPDATE/DELETE/REPLACE/LOAD DATA or CREATE TABLE
//!   ... SELECT in a Query event: the session used binlog_format STATEMENT or MIXED) is an error
//!   naming the transaction's GTID: its rows cannot be reconstructed, so it is never recorded as
//!   a statement (live streams; see [`statement_row_change`]);
//! - TABLE_MAPs are kept only until the transaction that carries them commits (each transaction
//!   maps its own tables again), and provided schemas up to [`MAX_CACHED_SCHEMAS`]: memory does
//!   not grow with the number of tables or table ids in the source.
//!
//! Live streaming uses [`AssemblerMode::Live`]: every transaction must carry a GTID and every
//! TABLE_MAP column names. [`AssemblerMode::File`] decodes historic binlog files, which may have
//! neither: transactions without GTIDs get an `anonymous@<file>:<pos>` id and do not move the
//! position, unnamed columns are named `@<index>`, and row changes logged as statements are
//! recorded as statements.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use mysql_async::binlog::events::{
    Event, EventData, GtidEvent, OptionalMetaExtractor, OptionalMetadataField, RotateEvent,
    RowsEventData, TableMapEvent, TransactionPayloadEvent,
};
use mysql_async::binlog::jsonb::{JsonContainer, JsonDom, JsonNumber, JsonScalar};
use mysql_async::binlog::value::BinlogValue;
use mysql_async::binlog::EventType;
use mysql_async::consts::ColumnType;
use mysql_common::io::ParseBuf;

use super::charset;
use super::gtid::{
    MariadbGtid, MariadbPosition, MysqlGtidSet, PartialTransaction, Position, ResumePoint,
};
use crate::event::{
    Change, Json, RowChange, RowOp, SourceTransaction, StatementChange, Table, Value,
};

/// MariaDB event types that `mysql_common` does not know.
mod mariadb_event {
    pub const ANNOTATE_ROWS: u8 = 160;
    pub const BINLOG_CHECKPOINT: u8 = 161;
    pub const GTID: u8 = 162;
    pub const GTID_LIST: u8 = 163;
    pub const START_ENCRYPTION: u8 = 164;
    pub const QUERY_COMPRESSED: u8 = 165;
    pub const ROWS_COMPRESSED_FIRST: u8 = 166;
    pub const ROWS_COMPRESSED_LAST: u8 = 171;
}

/// The most provided table schemas kept (see [`TransactionAssembler::provide_schema`]).
pub const MAX_CACHED_SCHEMAS: usize = 4096;

/// MariaDB GTID event flags (sql/log_event.h).
const FL_STANDALONE: u8 = 1;
const FL_GROUP_COMMIT_ID: u8 = 2;
const FL_PREPARED_XA: u8 = 64;
const FL_COMPLETED_XA: u8 = 128;

#[derive(Debug, thiserror::Error)]
#[error("cannot decode binlog event {event_type} at {file}:{pos}{table}: {reason}")]
pub struct DecodeError {
    pub file: String,
    pub pos: u64,
    pub event_type: String,
    /// ` (table db.tbl)` when the event concerns one table, empty otherwise.
    pub table: String,
    pub reason: String,
}

struct OpenTransaction {
    gtid: String,
    timestamp: u32,
    /// True for a MariaDB standalone event group (DDL): it ends after its one statement.
    standalone: bool,
    /// Changes not yet returned (in a fragment), with their approximate size.
    changes: Vec<Change>,
    bytes: usize,
    /// Ordinal of `changes[0]` in the transaction.
    fragment_first: u64,
    /// Ordinal the next change gets (= changes seen so far, including dropped ones).
    next_ordinal: u64,
    /// Changes with a lower ordinal are already saved (a resumed partial transaction): dropped.
    skip_below: u64,
    /// What the transaction adds to the position when it commits (the assembler's position is
    /// the position before it until then: no copy of a large GTID set is made per transaction).
    step: PositionStep,
}

/// How a transaction moves the position.
enum PositionStep {
    Mariadb(MariadbGtid),
    Mysql {
        source: String,
        gno: u64,
    },
    /// File mode: a transaction without a GTID does not move it.
    None,
}

impl OpenTransaction {
    fn push(&mut self, change: Change) {
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

/// The most a fragment of a transaction may hold; a transaction within both is returned whole.
/// One rows event may take a fragment past them (its rows are never split).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentLimits {
    pub max_changes: usize,
    /// Measured with [`Change::approximate_size`].
    pub max_bytes: usize,
}

impl FragmentLimits {
    /// Transactions are always returned whole (binlog file decoding, tests).
    pub const WHOLE: Self = Self {
        max_changes: usize::MAX,
        max_bytes: usize::MAX,
    };
}

/// What the assembler demands of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssemblerMode {
    /// A live binlog stream: GTIDs and column names are required.
    Live,
    /// Historic binlog files: transactions without GTIDs and TABLE_MAPs without column names are
    /// accepted (see the module documentation).
    File,
}

/// A TABLE_MAP event with what sdl needs from its optional metadata.
struct TableInfo {
    map: TableMapEvent<'static>,
    /// The table's names and primary key, shared by every row change decoded with this map.
    table: Arc<Table>,
    /// How to decode each column's values, by table column index.
    columns: Vec<ColumnDecoder>,
    /// ENUM/SET members are UTF-8 text from a [`TableSchema`], not in the column's charset.
    members_utf8: bool,
}

/// Everything needed to decode one column's values, worked out once per TABLE_MAP (what
/// `mysql_common`'s row decoder works out again for every row).
struct ColumnDecoder {
    column_type: ColumnType,
    /// The column's TABLE_MAP metadata bytes.
    meta: Vec<u8>,
    unsigned: bool,
    /// Collation id (character columns, ENUM, SET).
    charset: u16,
    /// ENUM/SET member names (raw bytes, in the column's ENUM/SET charset unless
    /// [`TableInfo::members_utf8`]).
    enum_members: Option<Vec<Vec<u8>>>,
    set_members: Option<Vec<Vec<u8>>>,
    /// Declared byte length of CHAR/BINARY columns (the binlog strips their trailing padding).
    fixed_length: Option<usize>,
}

/// Column names, ENUM/SET members and primary key of a table, from outside the binlog
/// (`information_schema`, for sources with `binlog_row_metadata=MINIMAL`).
#[derive(Debug, Clone, Default)]
pub struct TableSchema {
    pub names: Vec<String>,
    /// Members of ENUM and SET columns by column index, as UTF-8 text.
    pub enum_values: HashMap<usize, Vec<String>>,
    pub set_values: HashMap<usize, Vec<String>>,
    pub primary_key: Vec<String>,
}

/// How to get past row events written under `binlog_row_metadata=MINIMAL`: they stay in the
/// binlog as written, so setting FULL and restarting alone fails on the same event again.
const MINIMAL_WAY_OUT: &str = "Setting binlog_row_metadata=FULL on the source helps only for rows written after the change: the events already written this way stay as they are, and restarting alone fails on this one again. To get past them, add source.column_names = \"information_schema\" to the [source] section of the config and start sdl again: names are then read from information_schema (right unless the table has changed since; sdl refuses a table whose columns no longer match). Once sdl is past them (`sdl wal stats` ingest position), you may remove it again. (Skipping their changes instead means re-seeding after them: docs/operations.md, \"Rows written under binlog_row_metadata=MINIMAL\".) Either way, set binlog_row_metadata=FULL on the source (and in its config file) so that it does not happen again";

/// The `(database, table)` of a TABLE_MAP event that carries no column names.
pub fn table_without_names(event: &Event) -> Option<(String, String)> {
    if event.header().event_type_raw() != EventType::TABLE_MAP_EVENT as u8 {
        return None;
    }
    let map = catch_unwind(AssertUnwindSafe(|| event.read_event::<TableMapEvent<'_>>()))
        .ok()?
        .ok()?;
    let named = map
        .iter_optional_meta()
        .any(|f| matches!(f, Ok(OptionalMetadataField::ColumnName(_))));
    (!named).then(|| {
        (
            map.database_name().into_owned(),
            map.table_name().into_owned(),
        )
    })
}

/// One event expected inside a TRANSACTION_PAYLOAD: its type and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InnerEvent {
    event_type: u8,
    size: u32,
}

/// Turns a stream of binlog events into complete transactions.
pub struct TransactionAssembler {
    mode: AssemblerMode,
    file: Arc<str>,
    position: Position,
    table_maps: HashMap<u64, TableInfo>,
    /// Schemas provided for TABLE_MAPs without names, by (database, table).
    schemas: HashMap<(String, String), TableSchema>,
    open: Option<OpenTransaction>,
    limits: FragmentLimits,
    /// Set by [`Self::resume_inside`] until the next transaction begins.
    resume_partial: Option<PartialTransaction>,
    /// Events still expected from the last TRANSACTION_PAYLOAD, with its position.
    payload: VecDeque<InnerEvent>,
    payload_at: u64,
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

    /// Provides names for a table whose TABLE_MAPs carry none (see [`table_without_names`]).
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
                let gtid = parse_mariadb_gtid(event.data(), header.server_id())
                    .map_err(|reason| self.error(event, "MARIADB_GTID", reason))?;
                return self.begin_mariadb(event, gtid).map(|()| None);
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

    fn begin(
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
    fn begin_anonymous(
        &mut self,
        event: &Event,
        event_start: u64,
        standalone: bool,
    ) -> Result<(), DecodeError> {
        let gtid = format!("anonymous@{}:{event_start}", self.file);
        self.begin(event, gtid, standalone, PositionStep::None)
    }

    fn begin_mariadb(
        &mut self,
        event: &Event,
        parsed: ParsedMariadbGtid,
    ) -> Result<(), DecodeError> {
        if parsed.flags & (FL_PREPARED_XA | FL_COMPLETED_XA) != 0 {
            return Err(self.error(
                event,
                "MARIADB_GTID",
                format!(
                    "transaction {} is an XA transaction, which sdl does not support",
                    parsed.gtid
                ),
            ));
        }
        self.begin(
            event,
            parsed.gtid.to_string(),
            parsed.flags & FL_STANDALONE != 0,
            PositionStep::Mariadb(parsed.gtid),
        )
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

    fn on_query(
        &mut self,
        event: &Event,
        event_start: u64,
        schema: String,
        text: String,
    ) -> Result<Option<SourceTransaction>, DecodeError> {
        let keyword = text.trim().to_ascii_uppercase();
        if keyword == "BEGIN" {
            if self.open.is_none() && self.mode == AssemblerMode::File {
                self.begin_anonymous(event, event_start, false)?;
            }
            if let Some(open) = &mut self.open {
                // MySQL: BEGIN means a multi-statement transaction ending with XID or COMMIT.
                open.standalone = false;
            }
            return Ok(None);
        }
        if self.open.as_ref().is_some_and(|open| !open.standalone) && is_savepoint(&keyword) {
            // Savepoints inside a transaction carry no data: the row events written after a
            // ROLLBACK TO SAVEPOINT are the changes that stayed.
            return Ok(None);
        }
        if keyword == "COMMIT" || keyword == "ROLLBACK" {
            // Non-transactional engines end their event group with a COMMIT (or, for changes that
            // could not be rolled back, ROLLBACK) query; the changes in it are in the binlog.
            return self.commit(event);
        }
        if keyword.starts_with("XA ") {
            return Err(self.error(
                event,
                "QUERY",
                format!("XA statement `{text}` is not supported"),
            ));
        }
        // Live streams only: historic files (File mode) predate row-based logging as often as
        // not, and are decoded leniently, their statements recorded as they are.
        if let Some(kind) = statement_row_change(&text).filter(|_| self.mode == AssemblerMode::Live)
        {
            let gtid = match &self.open {
                Some(open) => format!("transaction {}", open.gtid),
                None => "a transaction without GTID".into(),
            };
            return Err(self.error(
                event,
                "QUERY",
                format!(
                    "{gtid} holds a row change logged as a statement ({kind}: `{}`): the session \
                     that ran it used binlog_format=STATEMENT or MIXED, so the binlog has no row \
                     images and the changed rows cannot be reconstructed. Nothing from this \
                     transaction on was relayed. Fix the source: set binlog_format=ROW in its \
                     configuration and with SET GLOBAL, and keep sessions from overriding it \
                     (SET SESSION binlog_format needs SUPER or BINLOG ADMIN). This transaction's \
                     changes must then be brought to MongoDB by other means: re-seed by starting \
                     sdl with an empty WAL directory and source.start set to a GTID position \
                     after it",
                    shorten(&text)
                ),
            ));
        }
        if self.open.is_none() && self.mode == AssemblerMode::File {
            self.begin_anonymous(event, event_start, true)?;
        }
        let file = self.file.to_string();
        let fragment = self.full_fragment();
        let Some(open) = &mut self.open else {
            return Err(self.error(
                event,
                "QUERY",
                format!("statement outside a GTID transaction: `{}`", shorten(&text)),
            ));
        };
        open.push(Change::Statement(StatementChange {
            database: schema,
            statement: text,
            file,
            pos: event_start,
        }));
        if open.standalone {
            // A standalone group has only this statement, so no fragment was taken before it.
            return self.commit(event);
        }
        Ok(fragment)
    }

    fn on_rows(
        &mut self,
        event: &Event,
        event_start: u64,
        rows: &RowsEventData<'_>,
    ) -> Result<Option<SourceTransaction>, DecodeError> {
        let op = match rows {
            RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => RowOp::Insert,
            RowsEventData::UpdateRowsEvent(_) | RowsEventData::UpdateRowsEventV1(_) => RowOp::Update,
            RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => RowOp::Delete,
            RowsEventData::PartialUpdateRowsEvent(_) => {
                return Err(self.error(
                    event,
                    "PARTIAL_UPDATE_ROWS",
                    "partial JSON updates are not supported: set binlog_row_value_options='' on the source"
                        .into(),
                ))
            }
        };
        let table_id = rows.table_id();
        let Some(info) = self.table_maps.get(&table_id) else {
            return Err(self.error(
                event,
                "ROWS",
                format!("no TABLE_MAP event for table id {table_id} precedes this rows event"),
            ));
        };
        let tme = &info.map;
        let shape = info.table.clone();
        let (database, table) = (&shape.database, &shape.name);
        let table_label = format!(" (table {database}.{table})");
        let row_error = |reason: String| DecodeError {
            file: self.file.to_string(),
            pos: event_start,
            event_type: event_type_name(event.header().event_type_raw()),
            table: table_label.clone(),
            reason,
        };
        if rows.num_columns() != tme.columns_count() {
            return Err(row_error(format!(
                "the rows event has {} columns, its TABLE_MAP {}",
                rows.num_columns(),
                tme.columns_count()
            )));
        }
        // mysql_common's value decoder indexes metadata it trusts; the TABLE_MAP was validated,
        // and a panic on anything else it trusts is caught here rather than taking the process
        // down.
        let images = catch_unwind(AssertUnwindSafe(|| decode_images(rows, info)))
            .map_err(|panic| row_error(format!("row decoder panicked: {}", panic_text(&panic))))?
            .map_err(row_error)?;
        let mut changes = Vec::with_capacity(images.len());
        let file = self.file.clone();
        for (before, after) in images {
            changes.push(Change::Row(RowChange {
                op,
                table: info.table.clone(),
                file: file.clone(),
                pos: event_start,
                before,
                after,
            }));
        }
        if self.open.is_none() && self.mode == AssemblerMode::File {
            self.begin_anonymous(event, event_start, false)?;
        }
        let fragment = self.full_fragment();
        let Some(open) = &mut self.open else {
            return Err(self.error(
                event,
                "ROWS",
                format!("row changes for {database}.{table} outside a GTID transaction"),
            ));
        };
        for change in changes {
            open.push(change);
        }
        Ok(fragment)
    }

    /// Takes the open transaction's pending changes as a fragment once they reach the limits.
    /// Called before more changes are added, so the transaction's last change always stays for
    /// the record that ends it.
    fn full_fragment(&mut self) -> Option<SourceTransaction> {
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

    fn commit(&mut self, event: &Event) -> Result<Option<SourceTransaction>, DecodeError> {
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

    fn error(&self, event: &Event, event_type: &str, reason: String) -> DecodeError {
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

struct ParsedMariadbGtid {
    gtid: MariadbGtid,
    flags: u8,
}

/// MariaDB GTID event body: seq_no u64 LE, domain_id u32 LE, flags u8, then optional fields.
fn parse_mariadb_gtid(body: &[u8], server_id: u32) -> Result<ParsedMariadbGtid, String> {
    if body.len() < 13 {
        return Err(format!(
            "GTID event body is {} bytes, expected at least 13",
            body.len()
        ));
    }
    let seq = u64::from_le_bytes(body[0..8].try_into().expect("8 bytes"));
    let domain = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
    let flags = body[12];
    if flags & FL_GROUP_COMMIT_ID != 0 && body.len() < 21 {
        return Err("GTID event announces a commit id but is too short to hold it".into());
    }
    Ok(ParsedMariadbGtid {
        gtid: MariadbGtid {
            domain,
            server: server_id,
            seq,
        },
        flags,
    })
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

fn event_type_name(raw: u8) -> String {
    match EventType::try_from(raw) {
        Ok(t) => format!("{t:?}"),
        Err(_) => format!("UNKNOWN({raw})"),
    }
}

fn shorten(text: &str) -> String {
    let mut s: String = text.chars().take(120).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s
}

/// What kind of row change `statement` is, when it is one: a DML statement (INSERT, UPDATE,
/// DELETE, REPLACE, LOAD DATA/XML, one of those after a `WITH` clause) or a `CREATE TABLE ...
/// SELECT`, which only appear as statement text in the binlog when the session logged in
/// STATEMENT or MIXED format (in ROW format their rows are row events, and CREATE ... SELECT is
/// logged as a plain CREATE TABLE). `None` for DDL and anything else. Comments and whitespace in
/// front are skipped; executable comments (`/*!50100 ... */`, `/*M!100100 ... */`) count as
/// their content.
pub fn statement_row_change(statement: &str) -> Option<&'static str> {
    let words = top_level_words(statement);
    let first = words.first()?.0.as_str();
    let dml = |w: &str| matches!(w, "INSERT" | "UPDATE" | "DELETE" | "REPLACE");
    match first {
        w if dml(w) => Some("DML statement"),
        "LOAD" if words.get(1).is_some_and(|(w, _)| w == "DATA" || w == "XML") => Some("LOAD DATA"),
        // `WITH cte AS (...) UPDATE/DELETE ...`: the statement's verb is the first top-level
        // word after the common table expressions.
        "WITH" if words.iter().any(|(w, depth)| *depth == 0 && dml(w)) => Some("DML statement"),
        "CREATE" => {
            let table = words
                .iter()
                .skip(1)
                .map(|(w, _)| w.as_str())
                .find(|w| !matches!(*w, "OR" | "REPLACE" | "TEMPORARY"));
            (table == Some("TABLE") && words.iter().any(|(w, _)| w == "SELECT"))
                .then_some("CREATE TABLE ... SELECT")
        }
        _ => None,
    }
}

/// The words of a statement in upper case, each with its parenthesis depth, outside comments,
/// string literals and quoted identifiers.
fn top_level_words(statement: &str) -> Vec<(String, usize)> {
    let bytes = statement.as_bytes();
    let mut words = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        match c {
            b'/' if next == Some(b'*') => {
                let rest = &bytes[i + 2..];
                let executable = rest.first() == Some(&b'!')
                    || (rest.first() == Some(&b'M') && rest.get(1) == Some(&b'!'));
                if executable {
                    // Read the content; its closing `*/` is skipped below.
                    i += 2 + if rest[0] == b'M' { 2 } else { 1 };
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                } else {
                    i = statement[i + 2..]
                        .find("*/")
                        .map_or(bytes.len(), |end| i + 2 + end + 2);
                }
            }
            b'*' if next == Some(b'/') => i += 2,
            b'#' => {
                i = statement[i..]
                    .find('\n')
                    .map_or(bytes.len(), |end| i + end + 1);
            }
            b'-' if next == Some(b'-')
                && bytes.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()) =>
            {
                i = statement[i..]
                    .find('\n')
                    .map_or(bytes.len(), |end| i + end + 1);
            }
            b'\'' | b'"' | b'`' => {
                let quote = c;
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == b'\\' && quote != b'`' {
                        i += 2;
                    } else if bytes[i] == quote {
                        if bytes.get(i + 1) == Some(&quote) {
                            i += 2;
                        } else {
                            i += 1;
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'(' => {
                depth += 1;
                i += 1;
            }
            b')' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                words.push((statement[start..i].to_ascii_uppercase(), depth));
            }
            _ => i += 1,
        }
    }
    words
}

fn is_savepoint(keyword: &str) -> bool {
    keyword.starts_with("SAVEPOINT ")
        || keyword.starts_with("RELEASE SAVEPOINT ")
        || (keyword.starts_with("ROLLBACK ")
            && keyword["ROLLBACK ".len()..].trim_start().starts_with("TO "))
        || keyword.starts_with("ROLLBACK WORK TO ")
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Frame header: timestamp u32, type u8, server_id u32, event_size u32, log_pos u32, flags u16.
const EVENT_HEADER_LEN: usize = 19;
/// The largest event sdl accepts (MySQL's max_allowed_packet ceiling is 1 GiB).
pub const MAX_EVENT_SIZE: u32 = 1 << 30;

/// Decompresses a TRANSACTION_PAYLOAD and lists the events inside it.
fn inner_events(payload: &TransactionPayloadEvent<'_>) -> Result<Vec<InnerEvent>, String> {
    let mut bytes = Vec::new();
    payload
        .decompressed()
        .and_then(|mut reader| {
            reader
                .by_ref()
                .take(u64::from(MAX_EVENT_SIZE))
                .read_to_end(&mut bytes)
        })
        .map_err(|e| format!("the payload does not decompress: {e}"))?;
    if payload.uncompressed_size() != 0 && bytes.len() as u64 != payload.uncompressed_size() {
        return Err(format!(
            "the payload decompresses to {} bytes, its header says {}",
            bytes.len(),
            payload.uncompressed_size()
        ));
    }
    let mut events = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        if rest.len() < EVENT_HEADER_LEN {
            return Err(format!(
                "the payload ends with a {}-byte fragment of an event header",
                rest.len()
            ));
        }
        let size = u32::from_le_bytes(rest[9..13].try_into().expect("4 bytes"));
        if (size as usize) < EVENT_HEADER_LEN || size as usize > rest.len() {
            return Err(format!(
                "an inner event declares {size} bytes, {} remain in the payload",
                rest.len()
            ));
        }
        events.push(InnerEvent {
            event_type: rest[4],
            size,
        });
        rest = &rest[size as usize..];
    }
    if events.is_empty() {
        return Err("the payload holds no events".into());
    }
    Ok(events)
}

/// How many metadata bytes `mysql_common` reads for a column of this type (it indexes them
/// without checking).
fn metadata_needed(column_type: ColumnType) -> usize {
    use ColumnType::*;
    match column_type {
        MYSQL_TYPE_STRING
        | MYSQL_TYPE_BIT
        | MYSQL_TYPE_NEWDECIMAL
        | MYSQL_TYPE_ENUM
        | MYSQL_TYPE_SET
        | MYSQL_TYPE_VARCHAR
        | MYSQL_TYPE_VAR_STRING => 2,
        MYSQL_TYPE_TYPED_ARRAY => 3,
        MYSQL_TYPE_TINY_BLOB
        | MYSQL_TYPE_MEDIUM_BLOB
        | MYSQL_TYPE_LONG_BLOB
        | MYSQL_TYPE_BLOB
        | MYSQL_TYPE_GEOMETRY
        | MYSQL_TYPE_VECTOR
        | MYSQL_TYPE_TIMESTAMP2
        | MYSQL_TYPE_DATETIME2
        | MYSQL_TYPE_TIME2 => 1,
        _ => 0,
    }
}

/// Validates a TABLE_MAP and extracts names, ENUM and SET members from its optional metadata.
/// The error carries the ` (table db.tbl)` label and the reason.
fn table_info(
    map: TableMapEvent<'static>,
    mode: AssemblerMode,
    provided: Option<&TableSchema>,
) -> Result<TableInfo, (String, String)> {
    let label = format!(" (table {}.{})", map.database_name(), map.table_name());
    let fail = |reason: String| (label.clone(), reason);
    let count = usize::try_from(map.columns_count())
        .map_err(|_| fail("column count does not fit in memory".into()))?;
    if count > 4096 {
        return Err(fail(format!(
            "{count} columns: more than MySQL's limit of 4096"
        )));
    }
    let mut enum_columns = Vec::new();
    let mut set_columns = Vec::new();
    let mut fixed_length = HashMap::new();
    for i in 0..count {
        let column_type = match map.get_column_type(i) {
            Ok(Some(t)) => t,
            Ok(None) => return Err(fail(format!("column {i} has no type"))),
            Err(e) => return Err(fail(format!("column {i}: {e}"))),
        };
        let needed = metadata_needed(column_type);
        let have = map.get_column_metadata(i).map(<[u8]>::len);
        if needed > 0 && have.is_none_or(|have| have < needed) {
            return Err(fail(format!(
                "column {i} ({column_type:?}) has {} metadata bytes, needs {needed}",
                have.unwrap_or(0)
            )));
        }
        // Ranges mysql_common computes with unchecked arithmetic.
        let meta = map.get_column_metadata(i).unwrap_or(&[]);
        let bad = match column_type {
            ColumnType::MYSQL_TYPE_NEWDECIMAL => {
                let (precision, scale) = (meta[0], meta[1]);
                !(1..=65).contains(&precision) || scale > 30 || scale > precision
            }
            ColumnType::MYSQL_TYPE_TIMESTAMP2
            | ColumnType::MYSQL_TYPE_DATETIME2
            | ColumnType::MYSQL_TYPE_TIME2 => meta[0] > 6,
            ColumnType::MYSQL_TYPE_BIT => meta[0] > 7 || meta[1] > 8,
            ColumnType::MYSQL_TYPE_SET => meta[1] > 8,
            ColumnType::MYSQL_TYPE_TYPED_ARRAY => true,
            _ => false,
        };
        if bad {
            return Err(fail(format!(
                "column {i} ({column_type:?}) has impossible metadata {meta:?}"
            )));
        }
        match column_type {
            ColumnType::MYSQL_TYPE_ENUM => enum_columns.push(i),
            ColumnType::MYSQL_TYPE_SET => set_columns.push(i),
            ColumnType::MYSQL_TYPE_STRING => {
                if let Some(&[b0, b1, ..]) = map.get_column_metadata(i) {
                    // sql/field.cc Field_string::do_save_field_metadata.
                    let (b0, b1) = (usize::from(b0), usize::from(b1));
                    let length = if b0 & 0x30 != 0x30 {
                        b1 | (((b0 & 0x30) ^ 0x30) << 4)
                    } else {
                        b1
                    };
                    fixed_length.insert(i, length);
                }
            }
            _ => {}
        }
    }
    let mut names: Option<Vec<String>> = None;
    let mut enum_values = HashMap::new();
    let mut set_values = HashMap::new();
    let mut primary_key: Option<Vec<u64>> = None;
    for field in map.iter_optional_meta() {
        let field = field.map_err(|e| fail(format!("optional metadata does not decode: {e}")))?;
        match field {
            OptionalMetadataField::ColumnName(column_names) => {
                let list = column_names
                    .iter_names()
                    .map(|n| n.map(|n| n.name().into_owned()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| fail(format!("column names do not decode: {e}")))?;
                names = Some(list);
            }
            OptionalMetadataField::EnumStrValue(values) => {
                let lists = values.iter_values().map(|members| {
                    members.map(|m| m.values().iter().map(|v| v.value_raw().to_vec()).collect())
                });
                enum_values = members_by_column(lists, &enum_columns, "ENUM").map_err(fail)?;
            }
            OptionalMetadataField::SetStrValue(values) => {
                let lists = values.iter_values().map(|members| {
                    members.map(|m| m.values().iter().map(|v| v.value_raw().to_vec()).collect())
                });
                set_values = members_by_column(lists, &set_columns, "SET").map_err(fail)?;
            }
            OptionalMetadataField::SimplePrimaryKey(key) => {
                let indexes = key
                    .iter_indexes()
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| fail(format!("primary key does not decode: {e}")))?;
                primary_key = Some(indexes);
            }
            OptionalMetadataField::PrimaryKeyWithPrefix(key) => {
                let indexes = key
                    .iter_keys()
                    .map(|part| part.map(|part| part.column_index()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| fail(format!("primary key does not decode: {e}")))?;
                primary_key = Some(indexes);
            }
            _ => {}
        }
    }
    let mut provided_names = None;
    if names.is_none() {
        if let Some(schema) = provided {
            // The race of the information_schema fallback: refuse what visibly no longer fits.
            let positions = |values: &HashMap<usize, Vec<String>>| {
                let mut v: Vec<usize> = values.keys().copied().collect();
                v.sort_unstable();
                v
            };
            if schema.names.len() != count
                || positions(&schema.enum_values) != enum_columns
                || positions(&schema.set_values) != set_columns
            {
                return Err(fail(format!(
                    "information_schema describes {} columns ({:?}) but the row event has {count} \
                     of other types: the table changed since this row was written, so its \
                     names cannot be known; set binlog_row_metadata=FULL on the source",
                    schema.names.len(),
                    schema.names
                )));
            }
            let utf8 = |values: &HashMap<usize, Vec<String>>| -> HashMap<usize, Vec<Vec<u8>>> {
                values
                    .iter()
                    .map(|(k, v)| (*k, v.iter().map(|m| m.as_bytes().to_vec()).collect()))
                    .collect()
            };
            enum_values = utf8(&schema.enum_values);
            set_values = utf8(&schema.set_values);
            let key = schema
                .primary_key
                .iter()
                .map(|name| {
                    schema.names.iter().position(|n| n == name).ok_or_else(|| {
                        fail(format!(
                            "information_schema names primary-key column `{name}`, which is not among its columns"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            primary_key = Some(key.into_iter().map(|i| i as u64).collect());
            provided_names = Some(schema.names.clone());
        }
    }
    let map_names = match names {
        Some(names) if names.len() == count => names,
        None if provided_names.is_some() => (0..count).map(|i| format!("@{i}")).collect(),
        Some(names) => {
            return Err(fail(format!(
                "{} column names for {count} columns",
                names.len()
            )))
        }
        None if mode == AssemblerMode::File => (0..count).map(|i| format!("@{i}")).collect(),
        None => {
            return Err(fail(format!(
                "the TABLE_MAP carries no column names: it was written while the source had \
                 binlog_row_metadata=MINIMAL. {MINIMAL_WAY_OUT}"
            )))
        }
    };
    if mode == AssemblerMode::Live
        && (enum_values.len() != enum_columns.len() || set_values.len() != set_columns.len())
    {
        return Err(fail(format!(
            "the TABLE_MAP lacks ENUM or SET member names: it was written while the source had \
             binlog_row_metadata=MINIMAL. {MINIMAL_WAY_OUT}"
        )));
    }
    let primary_key = primary_key
        .unwrap_or_default()
        .into_iter()
        .map(|i| match u32::try_from(i) {
            Ok(i) if (i as usize) < count => Ok(i),
            _ => Err(fail(format!(
                "primary-key column index {i} is past the table's {count} columns"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Signedness and charsets as mysql_common's own row decoder reads them
    // (binlog/row.rs): one entry per numeric, character, and ENUM/SET column, in order.
    let columns = {
        let extractor = OptionalMetaExtractor::new(map.iter_optional_meta())
            .map_err(|e| fail(format!("optional metadata does not decode: {e}")))?;
        let mut signedness = extractor.iter_signedness();
        let mut charsets = extractor.iter_charset();
        let mut enum_and_set_charsets = extractor.iter_enum_and_set_charset();
        let mut columns = Vec::with_capacity(count);
        for i in 0..count {
            let column_type = map
                .get_column_type(i)
                .ok()
                .flatten()
                .ok_or_else(|| fail(format!("column {i} has no type")))?;
            let unsigned = column_type.is_numeric_type() && signedness.next().unwrap_or_default();
            let charset = if column_type.is_character_type() {
                charsets.next().transpose()
            } else if column_type.is_enum_or_set_type() {
                enum_and_set_charsets.next().transpose()
            } else {
                Ok(None)
            }
            .map_err(|e| fail(format!("column {i}: charset does not decode: {e}")))?
            .unwrap_or_default();
            columns.push(ColumnDecoder {
                column_type,
                meta: map.get_column_metadata(i).unwrap_or(&[]).to_vec(),
                unsigned,
                charset,
                enum_members: enum_values.remove(&i),
                set_members: set_values.remove(&i),
                fixed_length: fixed_length.remove(&i),
            });
        }
        columns
    };
    let members_utf8 = provided_names.is_some();
    let table = Arc::new(Table {
        database: map.database_name().into_owned(),
        name: map.table_name().into_owned(),
        columns: provided_names.unwrap_or(map_names),
        primary_key,
    });
    Ok(TableInfo {
        map,
        table,
        columns,
        members_utf8,
    })
}

/// ENUM or SET member lists (one per column of that kind, in column order) by table column index.
fn members_by_column<E: std::fmt::Display>(
    lists: impl Iterator<Item = Result<Vec<Vec<u8>>, E>>,
    columns_of_kind: &[usize],
    kind: &str,
) -> Result<HashMap<usize, Vec<Vec<u8>>>, String> {
    let mut by_column = HashMap::new();
    for (k, members) in lists.enumerate() {
        let members = members.map_err(|e| format!("{kind} members do not decode: {e}"))?;
        let column = *columns_of_kind
            .get(k)
            .ok_or_else(|| format!("more {kind} member lists than {kind} columns"))?;
        by_column.insert(column, members);
    }
    Ok(by_column)
}

/// A row's image before and after the change (each present when the event type has it).
type RowImages = (Option<Vec<Value>>, Option<Vec<Value>>);

/// Decodes every row of a rows event with the TABLE_MAP's precomputed [`ColumnDecoder`]s: the
/// layout `mysql_common`'s `RowsEventRows` reads (for each row the before image, then the after
/// image, each a null bitmap over the columns present and their values), the values themselves
/// decoded by `mysql_common`'s `BinlogValue`.
fn decode_images<'a>(
    rows: &'a RowsEventData<'a>,
    info: &'a TableInfo,
) -> Result<Vec<RowImages>, String> {
    let mut buf = ParseBuf(rows.rows_data());
    let (before, after) = (rows.columns_before_image(), rows.columns_after_image());
    let mut images = Vec::new();
    while !buf.is_empty() {
        let before = before
            .map(|bits| {
                let present = |i: usize| bits.get(i).as_deref().copied().unwrap_or(false);
                decode_image(&mut buf, bits.count_ones(), present, info)
            })
            .transpose()?;
        let after = after
            .map(|bits| {
                let present = |i: usize| bits.get(i).as_deref().copied().unwrap_or(false);
                decode_image(&mut buf, bits.count_ones(), present, info)
            })
            .transpose()?;
        images.push((before, after));
    }
    Ok(images)
}

/// One row image as a value per table column; a column the image does not hold (a partial
/// `binlog_row_image`) is [`Value::Absent`].
fn decode_image<'a>(
    buf: &mut ParseBuf<'a>,
    in_image: usize,
    present: impl Fn(usize) -> bool,
    info: &'a TableInfo,
) -> Result<Vec<Value>, String> {
    let null_bitmap = buf
        .checked_eat(in_image.div_ceil(8))
        .ok_or_else(|| "row does not decode: the null bitmap is cut short".to_string())?;
    let is_null = |k: usize| {
        null_bitmap
            .get(k / 8)
            .is_none_or(|byte| byte & (1 << (k % 8)) != 0)
    };
    let mut values = Vec::with_capacity(info.columns.len());
    let mut image_index = 0;
    for (i, column) in info.columns.iter().enumerate() {
        if !present(i) {
            values.push(Value::Absent);
            continue;
        }
        let null = is_null(image_index);
        image_index += 1;
        if null {
            values.push(Value::Null);
            continue;
        }
        let name = || &info.table.columns[i];
        let raw: BinlogValue<'_> = buf
            .parse((
                column.column_type,
                column.meta.as_slice(),
                column.unsigned,
                false,
            ))
            .map_err(|e| format!("row does not decode: column `{}`: {e}", name()))?;
        let column_info = ColumnInfo {
            column_type: column.column_type,
            charset: column.charset,
            enum_members: column.enum_members.as_deref(),
            set_members: column.set_members.as_deref(),
            fixed_length: column.fixed_length,
            unsigned: column.unsigned,
            members_utf8: info.members_utf8,
        };
        let value =
            convert_value(&column_info, raw).map_err(|e| format!("column `{}`: {e}", name()))?;
        values.push(value);
    }
    Ok(values)
}

/// What the value conversion needs to know about a column.
pub struct ColumnInfo<'a> {
    pub column_type: ColumnType,
    /// Collation id (character columns, ENUM, SET).
    pub charset: u16,
    pub enum_members: Option<&'a [Vec<u8>]>,
    pub set_members: Option<&'a [Vec<u8>]>,
    /// CHAR/BINARY declared byte length: BINARY values are padded back to it with 0x00, as the
    /// server returns them (the binlog strips trailing 0x00 from BINARY(n)).
    pub fixed_length: Option<usize>,
    pub unsigned: bool,
    /// ENUM/SET members are UTF-8 text (from information_schema), not in the column's charset.
    pub members_utf8: bool,
}

/// Converts one decoded binlog value into sdl's lossless [`Value`].
pub fn convert_value(column: &ColumnInfo<'_>, value: BinlogValue<'_>) -> Result<Value, String> {
    use mysql_async::Value as My;
    let value = match value {
        BinlogValue::Value(v) => v,
        BinlogValue::Jsonb(j) => {
            let dom = j
                .parse()
                .map_err(|e| format!("binary JSON does not decode: {e}"))?;
            return Ok(Value::Json(json_from_dom(dom)));
        }
        BinlogValue::JsonDiff(_) => {
            return Err("partial JSON update in a full row image".into());
        }
    };
    Ok(match (column.column_type, value) {
        (_, My::NULL) => Value::Null,
        (ColumnType::MYSQL_TYPE_ENUM, My::Int(index)) => match column.enum_members {
            // Index 0 is the '' MySQL stores for an invalid value in non-strict mode.
            Some(_) if index == 0 => Value::Text(String::new()),
            Some(members) => {
                let member = usize::try_from(index - 1)
                    .ok()
                    .and_then(|i| members.get(i))
                    .ok_or_else(|| {
                        format!("ENUM index {index} beyond its {} members", members.len())
                    })?;
                Value::Text(member_text(column, member))
            }
            None => Value::Int(index),
        },
        (ColumnType::MYSQL_TYPE_SET, My::Bytes(bits)) => match column.set_members {
            Some(members) => {
                // Little-endian bitmap, bit k = member k.
                let mut chosen = Vec::new();
                for (k, member) in members.iter().enumerate() {
                    if bits.get(k / 8).is_some_and(|b| b & (1 << (k % 8)) != 0) {
                        chosen.push(member_text(column, member));
                    }
                }
                let known = members.len();
                let stray = bits.iter().enumerate().any(|(byte, b)| {
                    (0..8).any(|bit| b & (1 << bit) != 0 && byte * 8 + bit >= known)
                });
                if stray {
                    return Err(format!("SET bitmap has bits beyond its {known} members"));
                }
                Value::Set(chosen)
            }
            None => Value::Bytes(bits),
        },
        (
            ColumnType::MYSQL_TYPE_DATE | ColumnType::MYSQL_TYPE_NEWDATE,
            My::Date(year, month, day, ..),
        ) => Value::Date { year, month, day },
        // mysql_common reads a signed MEDIUMINT without sign extension (-8388608 arrives as
        // 8388608): extend bit 23 here. A correctly extended value is unchanged by this.
        (ColumnType::MYSQL_TYPE_INT24, My::Int(i)) if !column.unsigned => {
            Value::Int((i << 40) >> 40)
        }
        (ColumnType::MYSQL_TYPE_TIMESTAMP, My::Int(seconds)) => {
            Value::Timestamp { seconds, micros: 0 }
        }
        (_, My::Int(i)) => Value::Int(i),
        (_, My::UInt(u)) => Value::UInt(u),
        (_, My::Float(f)) => Value::Float(f),
        (_, My::Double(d)) => Value::Double(d),
        (_, My::Date(year, month, day, hour, minute, second, micros)) => Value::DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
        },
        (_, My::Time(negative, days, hours, minute, second, micros)) => Value::Time {
            negative,
            hours: days * 24 + u32::from(hours),
            minute,
            second,
            micros,
        },
        (ColumnType::MYSQL_TYPE_STRING, My::Bytes(mut bytes))
            if column.charset == charset::BINARY =>
        {
            if let Some(length) = column.fixed_length {
                if bytes.len() < length {
                    bytes.resize(length, 0);
                }
            }
            Value::Bytes(bytes)
        }
        (column_type, My::Bytes(bytes)) => convert_bytes(column_type, column.charset, bytes)?,
    })
}

/// ENUM/SET member names are stored in the column's charset; one that does not decode (never seen
/// in practice) is written as `0x` and its bytes in hex, so the value is still exact.
fn member_text(column: &ColumnInfo<'_>, member: &[u8]) -> String {
    let charset = if column.members_utf8 {
        charset::Charset::Utf8
    } else {
        charset::charset_of(column.charset)
    };
    match charset::decode(charset, member)
        .or_else(|| std::str::from_utf8(member).ok().map(str::to_owned))
    {
        Some(text) => text,
        None => format!(
            "0x{}",
            member
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ),
    }
}

fn json_from_dom(dom: JsonDom) -> Json {
    match dom {
        JsonDom::Container(JsonContainer::Array(items)) => {
            Json::Array(items.into_iter().map(json_from_dom).collect())
        }
        JsonDom::Container(JsonContainer::Object(members)) => Json::Object(
            members
                .into_iter()
                .map(|(k, v)| (k, json_from_dom(v)))
                .collect(),
        ),
        JsonDom::Scalar(scalar) => match scalar {
            JsonScalar::Null => Json::Null,
            JsonScalar::Boolean(b) => Json::Bool(b),
            JsonScalar::String(s) => Json::String(s),
            JsonScalar::Number(JsonNumber::Int(i)) => Json::Int(i),
            JsonScalar::Number(JsonNumber::Uint(u)) => Json::UInt(u),
            JsonScalar::Number(JsonNumber::Double(d)) => Json::Double(d),
            JsonScalar::Number(JsonNumber::Decimal(d)) => Json::Decimal(d.to_string()),
            JsonScalar::DateTime(t) => Json::Temporal(format!("{t:.6}")),
            JsonScalar::Opaque(opaque) => {
                // JsonOpaque keeps its fields private; its Display is `base64:type<id>:<data>`.
                let text = opaque.to_string();
                text.strip_prefix("base64:type")
                    .and_then(|rest| rest.split_once(':'))
                    .and_then(|(id, data)| Some((id.parse().ok()?, base64_decode(data)?)))
                    .map(|(type_code, bytes)| Json::Opaque { type_code, bytes })
                    .unwrap_or(Json::String(text))
            }
        },
    }
}

/// Standard base64 with padding (the form `mysql_common` prints opaque JSON values in).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let sextet = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks_exact(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | sextet(c)?;
        }
        n <<= 6 * pad as u32;
        let group = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&group[..3 - pad.min(2)]);
    }
    Some(out)
}

fn convert_bytes(column_type: ColumnType, collation: u16, bytes: Vec<u8>) -> Result<Value, String> {
    use ColumnType::*;
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).map_err(|e| e.to_string());
    Ok(match column_type {
        MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_DECIMAL => Value::Decimal(text(bytes)?),
        MYSQL_TYPE_YEAR => {
            // mysql_common adds 1900 to the stored byte; the stored 0 is YEAR 0000, not 1900
            // (which YEAR cannot hold).
            let year: i64 = text(bytes)?
                .parse()
                .map_err(|e| format!("YEAR value: {e}"))?;
            Value::Int(if year == 1900 { 0 } else { year })
        }
        MYSQL_TYPE_TIMESTAMP2 | MYSQL_TYPE_TIMESTAMP => {
            let text = text(bytes)?;
            let (secs, micros) = text.split_once('.').unwrap_or((&text, "0"));
            Value::Timestamp {
                seconds: secs.parse().map_err(|e| format!("TIMESTAMP value: {e}"))?,
                micros: micros
                    .parse()
                    .map_err(|e| format!("TIMESTAMP value: {e}"))?,
            }
        }
        MYSQL_TYPE_VARCHAR
        | MYSQL_TYPE_VAR_STRING
        | MYSQL_TYPE_STRING
        | MYSQL_TYPE_TINY_BLOB
        | MYSQL_TYPE_MEDIUM_BLOB
        | MYSQL_TYPE_LONG_BLOB
        | MYSQL_TYPE_BLOB => match charset::decode(charset::charset_of(collation), &bytes) {
            Some(text) => Value::Text(text),
            None => Value::Bytes(bytes),
        },
        _ => Value::Bytes(bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_opaque_json_bytes() {
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert_eq!(base64_decode("YWJj").unwrap(), b"abc");
        assert_eq!(base64_decode("AP8B").unwrap(), [0, 255, 1]);
        assert!(base64_decode("YW?j").is_none());
    }

    #[test]
    fn row_changes_logged_as_statements_are_told_from_ddl() {
        for dml in [
            "INSERT INTO t VALUES (1)",
            "  insert into t values (1)",
            "/* app */ UPDATE t SET a = 1",
            "-- note\nDELETE FROM t",
            "# note\nREPLACE INTO t VALUES (1)",
            "/*!40000 INSERT INTO t VALUES (1) */",
            "/*M!100100 DELETE FROM t */",
            "LOAD DATA INFILE '/tmp/x' INTO TABLE t",
            "load xml infile 'x' into table t",
            "INSERT INTO t SELECT * FROM u",
            "WITH c AS (SELECT 1) UPDATE t, c SET t.a = 1",
            "CREATE TABLE t2 SELECT * FROM t",
            "CREATE OR REPLACE TABLE t2 (a INT) AS SELECT a FROM t",
            "create temporary table t2 select 1",
        ] {
            assert!(
                statement_row_change(dml).is_some(),
                "{dml} not seen as a row change"
            );
        }
        for other in [
            "BEGIN",
            "COMMIT",
            "XA START 'x'",
            "SAVEPOINT s",
            "CREATE TABLE t (a INT)",
            "CREATE TABLE `insert` (`update` INT)",
            "CREATE TABLE t (a INT DEFAULT 1) COMMENT 'SELECT x'",
            "CREATE VIEW v AS SELECT * FROM t",
            "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.a = 1",
            "CREATE PROCEDURE p() INSERT INTO t VALUES (1)",
            "ALTER TABLE t ADD COLUMN `delete` INT",
            "DROP TABLE t",
            "TRUNCATE TABLE t",
            "RENAME TABLE t TO u",
            "GRANT SELECT ON *.* TO 'u'@'%'",
            "/* INSERT */ DROP TABLE t",
            "-- INSERT\nDROP TABLE t",
            "WITH c AS (SELECT 1) SELECT * FROM c",
            "LOAD INDEX INTO CACHE t",
            "",
        ] {
            assert_eq!(statement_row_change(other), None, "{other}");
        }
    }

    #[test]
    fn table_maps_are_evicted_at_commit_whatever_the_number_of_tables() {
        use crate::source::binlog_file::BinlogFileReader;
        const TABLES: usize = 10_000;
        let binlog = crate::source::fuzzing::binlog_with_tables(TABLES);
        let mut reader = BinlogFileReader::new(&binlog[..]);
        let mut assembler = TransactionAssembler::with_mode(
            Position::Mysql(MysqlGtidSet::default()),
            AssemblerMode::File,
        );
        let (mut transactions, mut most_cached) = (0, 0);
        while let Some(event) = reader.next_event().unwrap() {
            if assembler.feed(&event).unwrap().is_some() {
                transactions += 1;
                assert_eq!(assembler.cached_tables().0, 0, "after a commit");
            }
            most_cached = most_cached.max(assembler.cached_tables().0);
        }
        assert_eq!(transactions, TABLES);
        assert_eq!(
            most_cached, 1,
            "one table per transaction is mapped at a time"
        );
    }

    #[test]
    fn provided_schemas_are_bounded() {
        let mut assembler = TransactionAssembler::new(Position::Mariadb(Default::default()));
        for i in 0..MAX_CACHED_SCHEMAS * 2 + 5 {
            assembler.provide_schema("db".into(), format!("t{i}"), TableSchema::default());
            assert!(assembler.cached_tables().1 <= MAX_CACHED_SCHEMAS);
        }
        assert!(assembler.has_schema("db", &format!("t{}", MAX_CACHED_SCHEMAS * 2 + 4)));
    }

    #[test]
    fn savepoint_statements_are_recognised() {
        for s in [
            "SAVEPOINT `a`",
            "ROLLBACK TO `a`",
            "ROLLBACK TO SAVEPOINT a",
            "RELEASE SAVEPOINT a",
        ] {
            assert!(is_savepoint(&s.to_ascii_uppercase()), "{s}");
        }
        assert!(!is_savepoint("ROLLBACK"));
        assert!(!is_savepoint("ALTER TABLE SAVEPOINTS ADD X INT"));
    }
}
