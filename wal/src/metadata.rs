//! Metadata checked at open (see the crate header for what damage to each value leads to): a
//! format 1 WAL is upgraded in one atomic batch; a damaged value that can be rebuilt soundly from
//! the records is rebuilt and reported as a [`MetaRepair`]; one that cannot stops the open with
//! [`WalError::MetaDamaged`]. A damaged value is never used.

use std::collections::BTreeMap;

use crate::error::{MetaRepair, Result, WalError, RECOVER_FIX};
use crate::frame::encode_meta;
use crate::groups::{now_ms, Group};
use crate::handle::Wal;
use crate::layout::{
    format_value, group_key, key_name, meta_payload, record_key, seq_from_key, stored_format,
    FORMAT_VERSION, GROUP_PREFIX, KEY_ACKED, KEY_BASE_POSITION, KEY_FORMAT, KEY_INGEST_POSITION,
    KEY_WAL_ID, RECORD_PREFIX,
};
use crate::record::Record;

/// Rewrites gathered while the metadata is checked at open; written in one batch, and only when
/// something was repaired.
#[derive(Default)]
struct Rewrites {
    batch: sled::Batch,
    repairs: Vec<MetaRepair>,
}

impl<R: Record> Wal<R> {
    /// Reads the metadata, upgrading format 1 and rebuilding what damage allows (see the module
    /// header), and fills the in-memory accounting. Rebuilt values are written in one batch.
    pub(crate) fn load_metadata(&mut self) -> Result<Vec<MetaRepair>> {
        let mut rw = Rewrites::default();
        match self.raw(KEY_FORMAT)? {
            None if self.tree.is_empty() => {
                self.create()?;
                return Ok(rw.repairs);
            }
            None => rw.repairs.push(self.upgrade_from_format_1()?),
            Some(raw) => self.check_format(&raw, &mut rw)?,
        }
        self.id = self.load_id()?;

        let first_record = self.first_seq()?;
        let last_record = self
            .tree
            .scan_prefix([RECORD_PREFIX])
            .next_back()
            .transpose()
            .map_err(self.storage("find last record"))?
            .map(|(key, _)| seq_from_key(&key));
        let mut groups = self.load_groups(first_record, &mut rw)?;
        self.rebuild_missing_groups(first_record, last_record, &mut groups, &mut rw)?;
        let acked = self.load_acked(first_record, &mut rw)?;
        self.load_positions(first_record, last_record, &mut rw)?;

        if !rw.repairs.is_empty() {
            self.tree
                .apply_batch(rw.batch)
                .map_err(self.storage("rewrite metadata"))?;
            self.tree.flush().map_err(self.storage("flush"))?;
        }
        let mut accounting = self.accounting();
        accounting.groups = groups;
        accounting.acked = acked;
        accounting.recount_unacked();
        // With every record pruned, numbering continues after the acknowledged cursor.
        accounting.last_seq = last_record.unwrap_or(acked).max(acked);
        drop(accounting);
        Ok(rw.repairs)
    }

    /// A new WAL: its format and id, together.
    fn create(&mut self) -> Result<()> {
        // The id only has to differ between WALs: 16 bytes from the OS's random source.
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| {
            self.storage("WAL id generation")(sled::Error::Io(std::io::Error::other(e.to_string())))
        })?;
        let mut batch = sled::Batch::default();
        batch.insert(KEY_FORMAT, format_value());
        batch.insert(KEY_WAL_ID, encode_meta(FORMAT_VERSION, &id));
        self.tree
            .apply_batch(batch)
            .map_err(self.storage("create"))?;
        self.db.flush().map_err(self.storage("flush"))?;
        self.id = id;
        Ok(())
    }

    /// `m/format`: this release's format, or damaged (rewritten); another format stops the open.
    fn check_format(&self, raw: &[u8], rw: &mut Rewrites) -> Result<()> {
        match stored_format(raw) {
            Ok(FORMAT_VERSION) => {}
            Ok(found) => {
                return Err(WalError::UnknownFormat {
                    found,
                    supported: FORMAT_VERSION,
                    dir: self.dir.clone(),
                })
            }
            Err(problem) => {
                rw.batch.insert(KEY_FORMAT, format_value());
                rw.repairs.push(MetaRepair {
                    key: key_name(KEY_FORMAT),
                    problem,
                    action: format!("rewritten as format {FORMAT_VERSION} (only format {FORMAT_VERSION} or later writes this key)"),
                });
            }
        }
        Ok(())
    }

    /// `m/wal_id`: never rebuilt (see the crate header).
    fn load_id(&self) -> Result<[u8; 16]> {
        match self
            .raw(KEY_WAL_ID)?
            .map(|raw| meta_payload(&raw).map(<[u8; 16]>::try_from))
        {
            Some(Ok(Ok(id))) => Ok(id),
            Some(Ok(Err(_))) => Err(self.damaged(KEY_WAL_ID, "not 16 bytes", RECOVER_FIX)),
            Some(Err(e)) => Err(self.damaged(KEY_WAL_ID, e, RECOVER_FIX)),
            None => Err(self.damaged(KEY_WAL_ID, "missing", RECOVER_FIX)),
        }
    }

    /// The group index (`g/<last_seq>` entries), read in order.
    fn load_groups(
        &self,
        first_record: Option<u64>,
        rw: &mut Rewrites,
    ) -> Result<BTreeMap<u64, Group>> {
        // The group index; a damaged entry is rebuilt from the records it covers, which start
        // after the previous group's last record (or at the first stored record).
        let mut groups = BTreeMap::new();
        let mut previous_last: Option<u64> = None;
        let entries: Vec<(u64, sled::IVec)> = self
            .tree
            .scan_prefix([GROUP_PREFIX])
            .map(|item| item.map(|(k, v)| (seq_from_key(&k), v)))
            .collect::<Result<_, _>>()
            .map_err(self.storage("read groups"))?;
        for (last, value) in entries {
            let decoded = meta_payload(&value)
                .map_err(|e| e.to_string())
                .and_then(|p| Group::decode(p).ok_or_else(|| format!("{} bytes, not 24", p.len())));
            match decoded {
                Ok(group) => {
                    groups.insert(last, group);
                }
                Err(problem) => {
                    let first = match previous_last {
                        Some(p) => p + 1,
                        None => first_record.unwrap_or(last + 1),
                    };
                    let bytes = self.record_bytes(first, last)?;
                    let key = group_key(last);
                    if first > last || bytes == 0 {
                        rw.batch.remove(&key[..]);
                        rw.repairs.push(MetaRepair {
                            key: key_name(&key),
                            problem,
                            action: "removed: no record it covered is stored".into(),
                        });
                    } else {
                        let group = Group {
                            appended_ms: now_ms(),
                            first_seq: first,
                            bytes,
                        };
                        rw.batch
                            .insert(&key[..], encode_meta(FORMAT_VERSION, &group.encode()));
                        groups.insert(last, group);
                        rw.repairs.push(MetaRepair {
                            key: key_name(&key),
                            problem,
                            action: format!("rebuilt from records {first}..={last} ({bytes} bytes; append time set to now, which delays its age-based pruning)"),
                        });
                    }
                }
            }
            previous_last = Some(last);
        }
        Ok(groups)
    }

    /// Groups are contiguous and cover every stored record: a range no entry covers lost its
    /// entry (deleted, not just damaged). Only the gaps are scanned, so this costs nothing on an
    /// intact WAL.
    fn rebuild_missing_groups(
        &self,
        first_record: Option<u64>,
        last_record: Option<u64>,
        groups: &mut BTreeMap<u64, Group>,
        rw: &mut Rewrites,
    ) -> Result<()> {
        if let (Some(first), Some(last_stored)) = (first_record, last_record) {
            let mut gaps = Vec::new();
            let mut expected = first;
            for (&last, group) in groups.iter() {
                if group.first_seq > expected {
                    gaps.push((expected, group.first_seq - 1));
                }
                expected = expected.max(last + 1);
            }
            if last_stored >= expected {
                gaps.push((expected, last_stored));
            }
            for (gap_first, gap_last) in gaps {
                let bytes = self.record_bytes(gap_first, gap_last)?;
                if bytes == 0 {
                    continue;
                }
                let group = Group {
                    appended_ms: now_ms(),
                    first_seq: gap_first,
                    bytes,
                };
                let key = group_key(gap_last);
                rw.batch
                    .insert(&key[..], encode_meta(FORMAT_VERSION, &group.encode()));
                groups.insert(gap_last, group);
                rw.repairs.push(MetaRepair {
                    key: key_name(&key),
                    problem: format!(
                        "missing: no group entry covers records {gap_first}..={gap_last}"
                    ),
                    action: format!(
                        "rebuilt from those records ({bytes} bytes; append time set to now)"
                    ),
                });
            }
        }
        Ok(())
    }

    /// `m/acked`; a damaged cursor is rebuilt as a lower bound.
    fn load_acked(&self, first_record: Option<u64>, rw: &mut Rewrites) -> Result<u64> {
        let acked = match self
            .raw(KEY_ACKED)?
            .map(|raw| meta_payload(&raw).map(<[u8; 8]>::try_from))
        {
            // Never acknowledged, unless records were pruned (only acknowledged ones are).
            None if first_record.is_none_or(|first| first <= 1) => 0,
            Some(Ok(Ok(bytes))) => u64::from_be_bytes(bytes),
            decoded => {
                let problem = match decoded {
                    None => {
                        "missing while records before the first stored one were pruned".to_string()
                    }
                    Some(Ok(_)) => "not 8 bytes".to_string(),
                    Some(Err(e)) => e.to_string(),
                };
                let Some(first) = first_record else {
                    return Err(self.damaged(KEY_ACKED, format!("{problem}; no record is stored to rebuild it from, so the next sequence number is unknown"), RECOVER_FIX));
                };
                let rebuilt = first - 1;
                rw.batch.insert(
                    KEY_ACKED,
                    encode_meta(FORMAT_VERSION, &rebuilt.to_be_bytes()),
                );
                rw.repairs.push(MetaRepair {
                    key: key_name(KEY_ACKED),
                    problem,
                    action: format!("rebuilt as {rebuilt}, the sequence before the first stored record (only acknowledged records are pruned); sdl catches it up to MongoDB's offset before forwarding"),
                });
                rebuilt
            }
        };
        Ok(acked)
    }

    /// `m/ingest_position` and `m/base_position`.
    fn load_positions(
        &self,
        first_record: Option<u64>,
        last_record: Option<u64>,
        rw: &mut Rewrites,
    ) -> Result<()> {
        let last_record_position = |this: &Self| -> Result<Option<Vec<u8>>> {
            Ok(match last_record {
                Some(last) => match this.get(last) {
                    Ok(Some(stored)) => Some(stored.record.position_after().to_vec()),
                    _ => None,
                },
                None => None,
            })
        };
        let ingest = self.raw(KEY_INGEST_POSITION)?;
        let base = self.raw(KEY_BASE_POSITION)?;
        let ingest_problem = match &ingest {
            Some(raw) => meta_payload(raw).err().map(|e| e.to_string()),
            None if last_record.is_some() => Some("missing while records are stored".into()),
            None => None,
        };
        let base_decoded = base
            .as_ref()
            .map(|raw| meta_payload(raw).map(<[u8]>::to_vec));
        let mut ingest_rebuilt = None;
        if let Some(problem) = ingest_problem {
            let (position, from) = match (last_record, last_record_position(self)?, &base_decoded) {
                (Some(last), Some(position), _) => (position, format!("record {last}'s position")),
                (None, _, Some(Ok(base))) => (base.clone(), "m/base_position (no record is stored)".to_string()),
                (Some(last), None, _) => {
                    return Err(self.damaged(KEY_INGEST_POSITION, format!("{problem}; the last record, {last}, is unreadable too, so the position cannot be rebuilt"), RECOVER_FIX))
                }
                (None, _, _) => {
                    return Err(self.damaged(KEY_INGEST_POSITION, format!("{problem}; no record is stored and m/base_position is damaged too, so the position cannot be rebuilt"), RECOVER_FIX))
                }
            };
            rw.batch
                .insert(KEY_INGEST_POSITION, encode_meta(FORMAT_VERSION, &position));
            rw.repairs.push(MetaRepair {
                key: key_name(KEY_INGEST_POSITION),
                problem,
                action: format!(
                    "rebuilt from {from}: {}",
                    String::from_utf8_lossy(&position)
                ),
            });
            ingest_rebuilt = Some(position);
        }
        if let Some(Err(e)) = base_decoded {
            let ingest_now = match ingest_rebuilt {
                Some(p) => Some(p),
                None => ingest
                    .as_ref()
                    .and_then(|raw| meta_payload(raw).ok().map(<[u8]>::to_vec)),
            };
            match (first_record, ingest_now) {
                (None, Some(position)) => {
                    rw.batch
                        .insert(KEY_BASE_POSITION, encode_meta(FORMAT_VERSION, &position));
                    rw.repairs.push(MetaRepair {
                        key: key_name(KEY_BASE_POSITION),
                        problem: e.to_string(),
                        action: "rebuilt from m/ingest_position (no record is stored)".into(),
                    });
                }
                _ => {
                    rw.batch.remove(KEY_BASE_POSITION);
                    rw.repairs.push(MetaRepair {
                        key: key_name(KEY_BASE_POSITION),
                        problem: e.to_string(),
                        action: "removed: it is needed only to repair the first stored record, and such a repair now stops naming it".into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Sum of the frame sizes of the stored records in `first..=last`.
    fn record_bytes(&self, first: u64, last: u64) -> Result<u64> {
        if first > last {
            return Ok(0);
        }
        let mut bytes = 0;
        for item in self.tree.range(record_key(first)..=record_key(last)) {
            let (_, value) = item.map_err(self.storage("read records"))?;
            bytes += value.len() as u64;
        }
        Ok(bytes)
    }

    /// Format 1 stored metadata raw: check each value's shape as that format did, and rewrite all
    /// of them framed, with `m/format`, in one batch.
    fn upgrade_from_format_1(&self) -> Result<MetaRepair> {
        let old = |key: &[u8], problem: String| WalError::MetaDamaged {
            key: key_name(key),
            problem: format!("format 1 value: {problem}"),
            dir: self.dir.clone(),
            fix: RECOVER_FIX,
        };
        let mut batch = sled::Batch::default();
        match self.raw(KEY_WAL_ID)? {
            Some(id) if id.len() == 16 => {
                batch.insert(KEY_WAL_ID, encode_meta(FORMAT_VERSION, &id))
            }
            Some(id) => return Err(old(KEY_WAL_ID, format!("{} bytes, not 16", id.len()))),
            None => return Err(old(KEY_WAL_ID, "missing".into())),
        }
        if let Some(acked) = self.raw(KEY_ACKED)? {
            if acked.len() != 8 {
                return Err(old(KEY_ACKED, format!("{} bytes, not 8", acked.len())));
            }
            batch.insert(KEY_ACKED, encode_meta(FORMAT_VERSION, &acked));
        }
        for key in [KEY_INGEST_POSITION, KEY_BASE_POSITION] {
            if let Some(value) = self.raw(key)? {
                batch.insert(key, encode_meta(FORMAT_VERSION, &value));
            }
        }
        let mut groups = 0;
        for item in self.tree.scan_prefix([GROUP_PREFIX]) {
            let (key, value) = item.map_err(self.storage("read groups"))?;
            if value.len() != 24 {
                return Err(old(&key, format!("{} bytes, not 24", value.len())));
            }
            batch.insert(key, encode_meta(FORMAT_VERSION, &value));
            groups += 1;
        }
        batch.insert(KEY_FORMAT, format_value());
        self.tree
            .apply_batch(batch)
            .map_err(self.storage("upgrade"))?;
        self.tree.flush().map_err(self.storage("flush"))?;
        Ok(MetaRepair {
            key: key_name(KEY_FORMAT),
            problem: "WAL format 1 (metadata without checksums)".into(),
            action: format!("upgraded to format {FORMAT_VERSION}: the WAL id, cursors, positions and {groups} group entries rewritten with checksums in one batch"),
        })
    }
}
