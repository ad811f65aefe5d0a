//! Binlog events → whole source transactions.
//!
//! The [`TransactionAssembler`] is fed binlog events one at a time, from the network stream or from a
//! binlog file alike, and returns a [`SourceTransaction`] each time one is complete. It guarantees:
//! - a transaction is returned only when its commit (XID, `COMMIT` query, or the end of a standalone
//!   DDL) has been seen, with its row changes in binlog order;
//! - the position carried by a transaction includes that transaction and every earlier one;
//! - an event it cannot turn into change events is an [`DecodeError`] naming the binlog file,
//!   position, event type (and table, for row events). Nothing is skipped silently: the only events
//!   passed over are those that carry no row data (heartbeats, checkpoints, GTID lists, annotations).

use std::collections::HashMap;

use mysql_async::binlog::events::{
    Event, EventData, GtidEvent, RotateEvent, RowsEventData, TableMapEvent,
};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::binlog::EventType;
use mysql_async::consts::{ColumnFlags, ColumnType};

use super::gtid::{MariadbGtid, MariadbPosition, MysqlGtidSet, Position};
use crate::event::{Change, Column, RowChange, RowOp, SourceTransaction, StatementChange, Value};

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
    changes: Vec<Change>,
    position_after: Position,
}

/// Turns a stream of binlog events into complete transactions.
pub struct TransactionAssembler {
    file: String,
    position: Position,
    table_maps: HashMap<u64, TableMapEvent<'static>>,
    open: Option<OpenTransaction>,
}

impl TransactionAssembler {
    /// Starts assembling after `position` (the position of the last transaction already saved).
    pub fn new(position: Position) -> Self {
        Self {
            file: String::new(),
            position,
            table_maps: HashMap::new(),
            open: None,
        }
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

        let data = match event.read_data() {
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
                self.file = clean_binlog_name(&rotate);
                Ok(None)
            }
            EventData::FormatDescriptionEvent(_)
            | EventData::HeartbeatEvent
            | EventData::PreviousGtidsEvent(_)
            | EventData::StopEvent
            | EventData::RowsQueryEvent(_)
            | EventData::IntvarEvent(_)
            | EventData::RandEvent(_)
            | EventData::UserVarEvent(_)
            | EventData::TransactionPayloadEvent(_) => Ok(None),
            EventData::GtidEvent(gtid) => self.begin_mysql(event, &gtid).map(|()| None),
            EventData::AnonymousGtidEvent(_) => Err(self.error(
                event,
                "ANONYMOUS_GTID",
                "the source writes transactions without GTIDs; set gtid_mode=ON and \
                 enforce_gtid_consistency=ON on the source"
                    .into(),
            )),
            EventData::TableMapEvent(tme) => {
                self.table_maps.insert(tme.table_id(), tme.into_owned());
                Ok(None)
            }
            EventData::QueryEvent(query) => {
                let schema = query.schema().into_owned();
                let text = query.query().into_owned();
                self.on_query(event, event_start, schema, text)
            }
            EventData::XidEvent(_) => self.commit(event),
            EventData::RowsEvent(rows) => {
                self.on_rows(event, event_start, &rows)?;
                Ok(None)
            }
            EventData::XaPrepareLogEvent(_) => Err(self.error(
                event,
                "XA_PREPARE",
                "XA transactions are not supported; nothing after this point was relayed".into(),
            )),
            other => Err(self.error(
                event,
                &event_type_name(raw_type),
                format!(
                    "this event type cannot be turned into change events ({:?})",
                    std::mem::discriminant(&other)
                ),
            )),
        }
    }

    fn begin(
        &mut self,
        event: &Event,
        gtid: String,
        standalone: bool,
        position_after: Position,
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
        self.open = Some(OpenTransaction {
            gtid,
            timestamp: event.header().timestamp(),
            standalone,
            changes: Vec::new(),
            position_after,
        });
        Ok(())
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
        let mut after = match &self.position {
            Position::Mariadb(p) => p.clone(),
            Position::Mysql(_) => MariadbPosition::default(),
        };
        after.advance(parsed.gtid);
        self.begin(
            event,
            parsed.gtid.to_string(),
            parsed.flags & FL_STANDALONE != 0,
            Position::Mariadb(after),
        )
    }

    fn begin_mysql(&mut self, event: &Event, gtid: &GtidEvent) -> Result<(), DecodeError> {
        let uuid = format_uuid(&gtid.sid());
        let source = match gtid.tag() {
            Some(tag) => format!("{uuid}:{tag}"),
            None => uuid,
        };
        let mut after = match &self.position {
            Position::Mysql(s) => s.clone(),
            Position::Mariadb(_) => MysqlGtidSet::default(),
        };
        after.add(&source, gtid.gno());
        // A MySQL transaction that does not start with BEGIN is a single DDL statement.
        self.begin(
            event,
            format!("{source}:{}", gtid.gno()),
            true,
            Position::Mysql(after),
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
            if let Some(open) = &mut self.open {
                // MySQL: BEGIN means a multi-statement transaction ending with XID or COMMIT.
                open.standalone = false;
            }
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
        let file = self.file.clone();
        let Some(open) = &mut self.open else {
            return Err(self.error(
                event,
                "QUERY",
                format!("statement outside a GTID transaction: `{}`", shorten(&text)),
            ));
        };
        open.changes.push(Change::Statement(StatementChange {
            database: schema,
            statement: text,
            file,
            pos: event_start,
        }));
        if open.standalone {
            return self.commit(event);
        }
        Ok(None)
    }

    fn on_rows(
        &mut self,
        event: &Event,
        event_start: u64,
        rows: &RowsEventData<'_>,
    ) -> Result<(), DecodeError> {
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
        let Some(tme) = self.table_maps.get(&table_id) else {
            return Err(self.error(
                event,
                "ROWS",
                format!("no TABLE_MAP event for table id {table_id} precedes this rows event"),
            ));
        };
        let database = tme.database_name().into_owned();
        let table = tme.table_name().into_owned();
        let table_label = format!(" (table {database}.{table})");
        let mut decoded = Vec::new();
        for row in rows.rows(tme) {
            let (before, after) = row.map_err(|e| DecodeError {
                file: self.file.clone(),
                pos: event_start,
                event_type: event_type_name(event.header().event_type_raw()),
                table: table_label.clone(),
                reason: format!("row does not decode: {e}"),
            })?;
            decoded.push((before, after));
        }
        let mut changes = Vec::with_capacity(decoded.len());
        for (before, after) in decoded {
            let primary_key = before
                .as_ref()
                .or(after.as_ref())
                .map(primary_key_names)
                .unwrap_or_default();
            let convert = |row: Option<BinlogRow>| -> Result<Option<Vec<Column>>, String> {
                row.map(convert_row).transpose()
            };
            let (before, after) = match (convert(before), convert(after)) {
                (Ok(b), Ok(a)) => (b, a),
                (Err(reason), _) | (_, Err(reason)) => {
                    return Err(DecodeError {
                        file: self.file.clone(),
                        pos: event_start,
                        event_type: event_type_name(event.header().event_type_raw()),
                        table: table_label,
                        reason,
                    })
                }
            };
            changes.push(Change::Row(RowChange {
                op,
                database: database.clone(),
                table: table.clone(),
                file: self.file.clone(),
                pos: event_start,
                primary_key,
                before,
                after,
            }));
        }
        let Some(open) = &mut self.open else {
            return Err(self.error(
                event,
                "ROWS",
                format!("row changes for {database}.{table} outside a GTID transaction"),
            ));
        };
        open.changes.extend(changes);
        Ok(())
    }

    fn commit(&mut self, event: &Event) -> Result<Option<SourceTransaction>, DecodeError> {
        let Some(open) = self.open.take() else {
            return Err(self.error(
                event,
                &event_type_name(event.header().event_type_raw()),
                "commit without a transaction (no GTID event began one)".into(),
            ));
        };
        self.position = open.position_after;
        Ok(Some(SourceTransaction {
            gtid: open.gtid,
            timestamp: open.timestamp,
            position_after: self.position.to_string(),
            changes: open.changes,
        }))
    }

    fn error(&self, event: &Event, event_type: &str, reason: String) -> DecodeError {
        let header = event.header();
        DecodeError {
            file: self.file.clone(),
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

fn primary_key_names(row: &BinlogRow) -> Vec<String> {
    row.columns_ref()
        .iter()
        .filter(|c| c.flags().contains(ColumnFlags::PRI_KEY_FLAG))
        .map(|c| c.name_str().into_owned())
        .collect()
}

/// Charset ids whose bytes are Latin-1 (MySQL's latin1 is Windows-1252 in practice for 0x80-0x9F,
/// but every latin1 byte maps to one character either way; we use the ISO-8859-1 mapping exactly).
fn is_latin1(charset: u16) -> bool {
    matches!(charset, 5 | 8 | 15 | 31 | 47 | 48 | 49 | 94)
}

const BINARY_CHARSET: u16 = 63;

fn convert_row(mut row: BinlogRow) -> Result<Vec<Column>, String> {
    let columns = row.columns();
    let mut out = Vec::with_capacity(columns.len());
    for (i, column) in columns.iter().enumerate() {
        let name = column.name_str().into_owned();
        let Some(value) = row.take(i) else {
            continue;
        };
        let value = convert_value(column.column_type(), column.character_set(), value)
            .map_err(|e| format!("column `{name}`: {e}"))?;
        out.push(Column { name, value });
    }
    Ok(out)
}

fn convert_value(
    column_type: ColumnType,
    charset: u16,
    value: BinlogValue<'_>,
) -> Result<Value, String> {
    use mysql_async::Value as My;
    let value = match value {
        BinlogValue::Value(v) => v,
        BinlogValue::Jsonb(j) => {
            let json: serde_json::Value = j
                .try_into()
                .map_err(|e| format!("binary JSON does not convert: {e}"))?;
            return Ok(Value::Json(json.to_string()));
        }
        BinlogValue::JsonDiff(_) => {
            return Err("partial JSON update in a full row image".into());
        }
    };
    Ok(match value {
        My::NULL => Value::Null,
        My::Int(i) => Value::Int(i),
        My::UInt(u) => Value::UInt(u),
        My::Float(f) => Value::Float(f),
        My::Double(d) => Value::Double(d),
        My::Date(year, month, day, hour, minute, second, micros) => Value::DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
        },
        My::Time(negative, days, hours, minute, second, micros) => Value::Time {
            negative,
            hours: days * 24 + u32::from(hours),
            minute,
            second,
            micros,
        },
        My::Bytes(bytes) => convert_bytes(column_type, charset, bytes)?,
    })
}

fn convert_bytes(column_type: ColumnType, charset: u16, bytes: Vec<u8>) -> Result<Value, String> {
    use ColumnType::*;
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).map_err(|e| e.to_string());
    Ok(match column_type {
        MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_DECIMAL => Value::Decimal(text(bytes)?),
        MYSQL_TYPE_YEAR => Value::Int(
            text(bytes)?
                .parse()
                .map_err(|e| format!("YEAR value: {e}"))?,
        ),
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
        | MYSQL_TYPE_BLOB
            if charset != BINARY_CHARSET =>
        {
            if is_latin1(charset) {
                Value::Text(bytes.iter().map(|&b| char::from(b)).collect())
            } else {
                match String::from_utf8(bytes) {
                    Ok(s) => Value::Text(s),
                    Err(e) => Value::Bytes(e.into_bytes()),
                }
            }
        }
        _ => Value::Bytes(bytes),
    })
}
