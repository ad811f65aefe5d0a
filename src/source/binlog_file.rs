//! Binlog files → events → transactions, without a server (tests, fuzzing, offline checks).
//!
//! Guarantees: a file is read to its end or an error says where it stopped and why. A truncated
//! event, a bad magic number, a checksum mismatch, a TRANSACTION_PAYLOAD that does not decompress
//! or an event `mysql_common` cannot read are all errors with the byte offset; none is a silent
//! end (`mysql_common`'s own `BinlogFile` iterator treats a truncated event as the end of the file,
//! and its `Event::read` can panic on a short frame, so frames are cut and checked here first).
//! The events go through the same [`TransactionAssembler`] as the live stream, in
//! [`AssemblerMode::File`], and TRANSACTION_PAYLOAD events are expanded into their inner events
//! exactly as the network client does.

use std::io::{Cursor, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};

use mysql_async::binlog::events::{Event, TransactionPayloadEvent};
use mysql_async::binlog::{BinlogChecksumAlg, BinlogVersion, EventType};
use mysql_common::binlog::EventStreamReader;

use super::decode::{AssemblerMode, TransactionAssembler, MAX_EVENT_SIZE};
use crate::event::SourceTransaction;
use crate::gtid::{MysqlGtidSet, Position};

const MAGIC: [u8; 4] = [0xfe, b'b', b'i', b'n'];
const HEADER_LEN: usize = 19;

/// Reads the events of one binlog file.
pub struct BinlogFileReader<R> {
    input: R,
    reader: EventStreamReader,
    /// Byte offset of the next event in the file.
    offset: u64,
    /// Events still to be read from the last TRANSACTION_PAYLOAD.
    inner: Option<Cursor<Vec<u8>>>,
    /// Whether the last event returned came from inside a TRANSACTION_PAYLOAD.
    last_was_inner: bool,
    started: bool,
}

impl<R: Read> BinlogFileReader<R> {
    pub fn new(input: R) -> Self {
        Self {
            input,
            reader: EventStreamReader::new(BinlogVersion::Version4),
            offset: 0,
            inner: None,
            last_was_inner: false,
            started: false,
        }
    }

    /// Whether the event last returned by [`Self::next_event`] was inside a TRANSACTION_PAYLOAD.
    pub fn last_was_inner(&self) -> bool {
        self.last_was_inner
    }

    /// The next event, `Ok(None)` at a clean end of file (an event boundary), or an error naming
    /// the byte offset.
    pub fn next_event(&mut self) -> Result<Option<Event>, String> {
        if !self.started {
            self.started = true;
            let mut magic = [0u8; 4];
            read_full(&mut self.input, &mut magic)
                .map_err(|got| format!("the file is {got} bytes, shorter than the binlog magic"))?;
            if magic != MAGIC {
                return Err(format!("not a binlog file: magic {magic:02x?}"));
            }
            self.offset = 4;
        }
        if let Some(inner) = &mut self.inner {
            if (inner.position() as usize) < inner.get_ref().len() {
                let frame = read_frame(inner)
                    .map_err(|e| {
                        format!("inside the TRANSACTION_PAYLOAD before {}: {e}", self.offset)
                    })?
                    .expect("not at the end");
                self.last_was_inner = true;
                return self.parse(&frame, true).map(Some);
            }
            self.inner = None;
        }
        self.last_was_inner = false;
        let at = self.offset;
        let Some(frame) = read_frame(&mut self.input).map_err(|e| format!("at byte {at}: {e}"))?
        else {
            return Ok(None);
        };
        self.offset += frame.len() as u64;
        let event = self
            .parse(&frame, false)
            .map_err(|e| format!("at byte {at}: {e}"))?;
        if event.header().event_type_raw() == EventType::TRANSACTION_PAYLOAD_EVENT as u8 {
            let payload = event
                .read_event::<TransactionPayloadEvent<'_>>()
                .map_err(|e| format!("TRANSACTION_PAYLOAD at byte {at}: {e}"))?;
            let mut bytes = Vec::new();
            payload
                .decompressed()
                .and_then(|mut r| {
                    r.by_ref()
                        .take(u64::from(MAX_EVENT_SIZE))
                        .read_to_end(&mut bytes)
                })
                .map_err(|e| {
                    format!("TRANSACTION_PAYLOAD at byte {at} does not decompress: {e}")
                })?;
            self.inner = Some(Cursor::new(bytes));
        }
        Ok(Some(event))
    }

    fn parse(&mut self, frame: &[u8], inner: bool) -> Result<Event, String> {
        let reader = &mut self.reader;
        let result = catch_unwind(AssertUnwindSafe(|| {
            if inner {
                reader.read_decompressed(frame)
            } else {
                reader.read(frame)
            }
        }));
        let event = match result {
            Ok(Ok(Some(event))) => event,
            Ok(Ok(None)) => return Err("empty event".into()),
            Ok(Err(e)) => return Err(format!("event does not decode: {e}")),
            Err(_) => return Err("event decoder panicked on this frame".into()),
        };
        if !inner {
            if let (Ok(Some(alg @ BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32)), Some(stored)) =
                (event.footer().get_checksum_alg(), event.checksum())
            {
                let computed = event.calc_checksum(alg);
                if computed != u32::from_le_bytes(stored) {
                    return Err(format!(
                        "checksum mismatch in {} event (stored {:08x}, computed {computed:08x})",
                        event_name(event.header().event_type_raw()),
                        u32::from_le_bytes(stored)
                    ));
                }
            }
        }
        Ok(event)
    }
}

fn event_name(raw: u8) -> String {
    match EventType::try_from(raw) {
        Ok(t) => format!("{t:?}"),
        Err(_) => format!("UNKNOWN({raw})"),
    }
}

/// Fills `buf`; on a short read returns how many bytes there were.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> Result<(), usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => return Err(got),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(got),
        }
    }
    Ok(())
}

/// One whole event frame, `None` at a clean end.
fn read_frame(input: &mut impl Read) -> Result<Option<Vec<u8>>, String> {
    let mut header = [0u8; HEADER_LEN];
    match read_full(input, &mut header) {
        Ok(()) => {}
        Err(0) => return Ok(None),
        Err(got) => {
            return Err(format!(
                "truncated event header ({got} of {HEADER_LEN} bytes)"
            ))
        }
    }
    let size = u32::from_le_bytes(header[9..13].try_into().expect("4 bytes"));
    if (size as usize) < HEADER_LEN || size > MAX_EVENT_SIZE {
        return Err(format!(
            "event of type {} declares an impossible size of {size} bytes",
            event_name(header[4])
        ));
    }
    let mut frame = vec![0u8; size as usize];
    frame[..HEADER_LEN].copy_from_slice(&header);
    read_full(input, &mut frame[HEADER_LEN..]).map_err(|got| {
        format!(
            "truncated {} event ({} of {size} bytes)",
            event_name(header[4]),
            HEADER_LEN + got
        )
    })?;
    Ok(Some(frame))
}

/// Decodes a whole binlog file into transactions. `name` is the file name used in positions.
pub fn decode_file(name: &str, bytes: &[u8]) -> Result<Vec<SourceTransaction>, String> {
    let mut reader = BinlogFileReader::new(bytes);
    let mut assembler = TransactionAssembler::with_mode(
        Position::Mysql(MysqlGtidSet::default()),
        AssemblerMode::File,
    );
    assembler.set_file(name);
    let mut transactions = Vec::new();
    while let Some(event) = reader.next_event().map_err(|e| format!("{name}: {e}"))? {
        if let Some(transaction) = assembler.feed(&event).map_err(|e| e.to_string())? {
            transactions.push(transaction);
        }
    }
    assembler.finish().map_err(|e| e.to_string())?;
    Ok(transactions)
}
