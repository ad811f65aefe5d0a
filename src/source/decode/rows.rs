//! Row events: WRITE/UPDATE/DELETE_ROWS decoded with their TABLE_MAP into row changes.
//!
//! Guarantee: malformed row data is an error, never a panic: the rows are decoded with the
//! TABLE_MAP's validated [`ColumnDecoder`]s, and a panic inside `mysql_common`'s value decoder is
//! caught and reported as a [`DecodeError`] naming the table.

use std::panic::{catch_unwind, AssertUnwindSafe};

use mysql_async::binlog::events::{Event, RowsEventData};
use mysql_async::binlog::value::BinlogValue;
use mysql_common::io::ParseBuf;

use super::assembler::TransactionAssembler;
#[cfg(doc)]
use super::table_map::ColumnDecoder;
use super::table_map::TableInfo;
use super::value::{convert_value, ColumnInfo};
use super::{event_type_name, panic_text, AssemblerMode, DecodeError};
use crate::event::{Change, RowChange, RowOp, SourceTransaction, Value};

impl TransactionAssembler {
    pub(super) fn on_rows(
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
