//! Fuzzing and test inputs for the binlog decoder (used by `crate::fuzzing`, `fuzz/` and tests;
//! not part of the relay).
//!
//! [`binlog_from_bytes`] turns arbitrary bytes into a small MySQL 8 binlog: a TABLE_MAP whose
//! column types, type metadata, charsets and signedness are chosen by the input (with column names
//! and ENUM/SET members, as `binlog_row_metadata=FULL` writes them), then a WRITE/UPDATE/DELETE
//! rows event whose row data is the rest of the input, then an XID. `crate::fuzzing` decodes it
//! exactly as a file is decoded and converts the result to change documents (that harness drives
//! the sink's document writer too, so it lives above both stages). [`binlog_with_tables`] builds a
//! binlog touching many tables, for tests of the decoder's per-table memory.

/// FORMAT_DESCRIPTION_EVENT of a MySQL 8.0.40 binlog (CRC32 checksums).
const FDE: &[u8] = &[
    0xb8, 0xd5, 0x18, 0x68, 0x0f, 0x01, 0x00, 0x00, 0x00, 0x7a, 0x00, 0x00, 0x00, 0x7e, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x04, 0x00, 0x38, 0x2e, 0x30, 0x2e, 0x34, 0x30, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x13, 0x00, 0x0d, 0x00, 0x08,
    0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x04, 0x00, 0x00, 0x00, 0x62, 0x00, 0x04, 0x1a, 0x08, 0x00,
    0x00, 0x00, 0x08, 0x08, 0x08, 0x02, 0x00, 0x00, 0x00, 0x0a, 0x0a, 0x0a, 0x2a, 0x2a, 0x00, 0x12,
    0x34, 0x00, 0x0a, 0x28, 0x00, 0x01, 0x89, 0x6b, 0x44, 0xbd,
];

const TYPES: &[u8] = &[
    1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 15, 16, 17, 18, 19, 245, 246, 247, 248, 249, 250, 251,
    252, 253, 254, 255,
];
const COLLATIONS: &[u16] = &[45, 33, 8, 11, 35, 54, 56, 60, 63, 255, 2304, 9999];

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
}

fn lenenc(out: &mut Vec<u8>, n: usize) {
    if n < 251 {
        out.push(n as u8);
    } else {
        out.push(0xfc);
        out.extend_from_slice(&(n as u16).to_le_bytes());
    }
}

fn tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    out.push(kind);
    lenenc(out, value.len());
    out.extend_from_slice(value);
}

fn frame(out: &mut Vec<u8>, event_type: u8, body: &[u8]) {
    let size = 19 + body.len() + 4;
    let log_pos = out.len() + size;
    let start = out.len();
    out.extend_from_slice(&1_700_000_000u32.to_le_bytes());
    out.push(event_type);
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(size as u32).to_le_bytes());
    out.extend_from_slice(&(log_pos as u32).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Builds the binlog described in the module documentation from `data`.
pub fn binlog_from_bytes(data: &[u8]) -> Vec<u8> {
    let mut input = Input(data);
    let columns = usize::from(input.byte() % 12) + 1;
    let types: Vec<u8> = (0..columns)
        .map(|_| TYPES[usize::from(input.byte()) % TYPES.len()])
        .collect();
    let mut metadata = Vec::new();
    let mut enums = 0;
    let mut sets = 0;
    for &t in &types {
        match t {
            // One metadata byte.
            4 | 5 | 17 | 18 | 19 | 245 | 252 | 255 => metadata.push(input.byte()),
            // Two: VARCHAR length, BIT, NEWDECIMAL precision/scale.
            15 | 16 | 246 => {
                metadata.push(input.byte());
                metadata.push(input.byte());
            }
            // STRING/ENUM/SET: real type + length.
            247 | 248 | 254 => {
                let real = match t {
                    247 => {
                        enums += 1;
                        247
                    }
                    248 => {
                        sets += 1;
                        248
                    }
                    _ => 254,
                };
                metadata.push(real);
                metadata.push(input.byte());
            }
            _ => {}
        }
    }
    let mut optional = Vec::new();
    let numeric = types
        .iter()
        .filter(|t| matches!(t, 0 | 1 | 2 | 3 | 4 | 5 | 8 | 9 | 13 | 246))
        .count();
    let signedness: Vec<u8> = (0..numeric.div_ceil(8)).map(|_| input.byte()).collect();
    tlv(&mut optional, 1, &signedness); // SIGNEDNESS
    let collation = COLLATIONS[usize::from(input.byte()) % COLLATIONS.len()];
    let mut charset = Vec::new();
    lenenc(&mut charset, usize::from(collation));
    tlv(&mut optional, 2, &charset); // DEFAULT_CHARSET
    tlv(&mut optional, 10, &charset); // ENUM_AND_SET_DEFAULT_CHARSET
    let mut names = Vec::new();
    for i in 0..columns {
        let name = format!("c{i}");
        lenenc(&mut names, name.len());
        names.extend_from_slice(name.as_bytes());
    }
    tlv(&mut optional, 4, &names); // COLUMN_NAME
    let members = |count: usize| {
        let mut out = Vec::new();
        for _ in 0..count {
            lenenc(&mut out, 3);
            for m in ["a", "b", "ç"] {
                lenenc(&mut out, m.len());
                out.extend_from_slice(m.as_bytes());
            }
        }
        out
    };
    if sets > 0 {
        tlv(&mut optional, 5, &members(sets));
    }
    if enums > 0 {
        tlv(&mut optional, 6, &members(enums));
    }

    let mut table_map = Vec::new();
    table_map.extend_from_slice(&[1, 0, 0, 0, 0, 0, 1, 0]);
    for name in ["db", "tbl"] {
        table_map.push(name.len() as u8);
        table_map.extend_from_slice(name.as_bytes());
        table_map.push(0);
    }
    lenenc(&mut table_map, columns);
    table_map.extend_from_slice(&types);
    lenenc(&mut table_map, metadata.len());
    table_map.extend_from_slice(&metadata);
    table_map.extend(std::iter::repeat_n(0xff, columns.div_ceil(8)));
    table_map.extend_from_slice(&optional);

    let kind = 30 + input.byte() % 3; // WRITE, UPDATE, DELETE (v2)
    let mut rows = vec![1, 0, 0, 0, 0, 0, 1, 0, 2, 0];
    lenenc(&mut rows, columns);
    let images = if kind == 31 { 2 } else { 1 };
    for _ in 0..images {
        rows.extend(std::iter::repeat_n(0xff, columns.div_ceil(8)));
    }
    rows.extend_from_slice(input.0);

    let mut binlog = vec![0xfe, b'b', b'i', b'n'];
    binlog.extend_from_slice(FDE);
    frame(&mut binlog, 19, &table_map);
    frame(&mut binlog, kind, &rows);
    frame(&mut binlog, 16, &7u64.to_le_bytes());
    binlog
}

/// A binlog of `tables` single-row transactions, each on its own table (`db.t<i>`, table id
/// `i + 1`, one INT column `id`): what a source with that many tables writes when each gets a row.
/// For tests of the decoder's per-table memory.
pub fn binlog_with_tables(tables: usize) -> Vec<u8> {
    let mut binlog = vec![0xfe, b'b', b'i', b'n'];
    binlog.extend_from_slice(FDE);
    for i in 0..tables {
        let table_id = (i as u64 + 1).to_le_bytes();
        let mut optional = Vec::new();
        tlv(&mut optional, 1, &[0]); // SIGNEDNESS: signed
        let mut names = Vec::new();
        lenenc(&mut names, 2);
        names.extend_from_slice(b"id");
        tlv(&mut optional, 4, &names); // COLUMN_NAME
        let mut table_map = Vec::new();
        table_map.extend_from_slice(&table_id[..6]);
        table_map.extend_from_slice(&[1, 0]);
        for name in ["db".to_string(), format!("t{i}")] {
            table_map.push(name.len() as u8);
            table_map.extend_from_slice(name.as_bytes());
            table_map.push(0);
        }
        lenenc(&mut table_map, 1);
        table_map.push(3); // LONG
        lenenc(&mut table_map, 0);
        table_map.push(0); // not nullable
        table_map.extend_from_slice(&optional);

        let mut rows = Vec::new();
        rows.extend_from_slice(&table_id[..6]);
        rows.extend_from_slice(&[1, 0, 2, 0]); // STMT_END, no extra data
        lenenc(&mut rows, 1);
        rows.push(0x01); // columns present
        rows.push(0x00); // null bitmap
        rows.extend_from_slice(&(i as i32).to_le_bytes());

        frame(&mut binlog, 19, &table_map);
        frame(&mut binlog, 30, &rows);
        frame(&mut binlog, 16, &(i as u64).to_le_bytes());
    }
    binlog
}
