//! The request log: what a client's acknowledgement rests on. Every accepted export request is
//! appended as one record, and the log is `fdatasync`ed before the request is answered; the
//! store is filled from the log behind it. A crash loses nothing that was answered: on start,
//! the log is read back from the offset the store had committed.
//!
//! The log is a folder of segment files named by the offset of their first byte (20 digits,
//! `.seg`); offsets count bytes from the start of the log and never repeat. A record is
//!
//! ```text
//! length: u32 LE (of the payload) | crc32c: u32 LE (of time and payload) | received: i64 LE (Unix ns) | payload
//! ```
//!
//! A segment is closed at `segment_bytes` and a new one begun; segments wholly below every
//! consumer's offset are deleted. A torn or corrupt tail (a crash in the middle of a write, a
//! flipped byte) fails its length or CRC check: the log is cut at the last whole record and the
//! cut is reported.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const HEADER_BYTES: u64 = 16;
/// No record is larger: a larger length field is corruption, not a request.
pub const MAX_RECORD_BYTES: u64 = 256 * 1024 * 1024;
const SUFFIX: &str = "seg";

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("the request log {path}: {action}")]
    Io {
        path: String,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the request log's segment {path} was deleted while archtrace wrote it (was the log's folder removed?); what it held since is not durable. Restart archtrace to begin a new log")]
    Deleted { path: String },
}

fn io<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(std::io::Error) -> LogError + 'a {
    move |source| LogError::Io {
        path: path.display().to_string(),
        action,
        source,
    }
}

/// Where a damaged log was cut when it was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The offset of the first byte dropped: everything before it is intact.
    pub at: u64,
    pub dropped_bytes: u64,
    pub reason: String,
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub received_ns: i64,
    pub payload: Vec<u8>,
    /// The offset just after it: a consumer that has handled it resumes here.
    pub end: u64,
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.{SUFFIX}"))
}

/// The segments of a log folder, by base offset.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir, "could not list the segments"))? {
        let path = entry
            .map_err(io(dir, "could not list the segments"))?
            .path();
        let base = path
            .extension()
            .filter(|ext| *ext == SUFFIX)
            .and_then(|_| path.file_stem()?.to_str()?.parse::<u64>().ok());
        if let Some(base) = base {
            found.push((base, path));
        }
    }
    found.sort();
    Ok(found)
}

/// Reads the record at the reader's position, or says why there is no whole one there.
fn read_record(reader: &mut impl Read, available: u64) -> Result<(i64, Vec<u8>), String> {
    if available < HEADER_BYTES {
        return Err(format!("a record header cut short ({available} bytes)"));
    }
    let mut header = [0u8; HEADER_BYTES as usize];
    reader
        .read_exact(&mut header)
        .map_err(|err| format!("unreadable header: {err}"))?;
    let length = u64::from(u32::from_le_bytes(
        header[0..4].try_into().expect("4 bytes"),
    ));
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let received_ns = i64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    if length > MAX_RECORD_BYTES || HEADER_BYTES + length > available {
        return Err(format!(
            "a record of {length} bytes with {} left in the segment",
            available - HEADER_BYTES
        ));
    }
    let mut payload = vec![0; length as usize];
    reader
        .read_exact(&mut payload)
        .map_err(|err| format!("unreadable record: {err}"))?;
    let expected = crc32c::crc32c_append(crc32c::crc32c(&header[8..16]), &payload);
    if expected != crc {
        return Err("a record whose checksum does not match".to_owned());
    }
    Ok((received_ns, payload))
}

/// The valid length of a segment file: the bytes up to its last whole, intact record.
fn scan(path: &Path) -> Result<(u64, Option<String>), LogError> {
    let mut file = File::open(path).map_err(io(path, "could not open a segment"))?;
    let size = file
        .metadata()
        .map_err(io(path, "could not read a segment's size"))?
        .len();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, &mut file);
    let mut valid = 0;
    while valid < size {
        match read_record(&mut reader, size - valid) {
            Ok((_, payload)) => valid += HEADER_BYTES + payload.len() as u64,
            Err(reason) => return Ok((valid, Some(reason))),
        }
    }
    Ok((valid, None))
}

/// Appends records to the log; one per log, owned by the thread that answers clients.
pub struct LogWriter {
    dir: PathBuf,
    segment_bytes: u64,
    file: BufWriter<File>,
    /// The offset of the open segment's first byte.
    base: u64,
    /// The offset after the last record appended.
    end: u64,
}

impl LogWriter {
    /// Opens the log in `dir` (created if missing), checks every segment and cuts a damaged
    /// tail. `consumed` is the offset the store committed: a log that ends before it (its
    /// folder was lost) starts again there.
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        consumed: u64,
    ) -> Result<(LogWriter, Option<Cut>), LogError> {
        std::fs::create_dir_all(dir).map_err(io(dir, "could not create the log folder"))?;
        let mut cut = None;
        let mut found = segments(dir)?;
        let mut index = 0;
        while index < found.len() {
            let (base, path) = &found[index];
            let (valid, damage) = scan(path)?;
            if let Some(reason) = damage {
                // Everything from the first bad record on is unreadable: cut it, and drop the
                // segments after it.
                let size = std::fs::metadata(path)
                    .map_err(io(path, "could not read a segment's size"))?
                    .len();
                let mut dropped = size - valid;
                for (_, later) in &found[index + 1..] {
                    dropped += std::fs::metadata(later).map(|m| m.len()).unwrap_or(0);
                    std::fs::remove_file(later).map_err(io(later, "could not remove a segment"))?;
                }
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io(path, "could not open a segment"))?;
                file.set_len(valid)
                    .map_err(io(path, "could not cut a segment"))?;
                file.sync_all()
                    .map_err(io(path, "could not sync a segment"))?;
                cut = Some(Cut {
                    at: base + valid,
                    dropped_bytes: dropped,
                    reason,
                });
                found.truncate(index + 1);
                break;
            }
            index += 1;
        }
        let end = match found.last() {
            Some((base, path)) => {
                base + std::fs::metadata(path)
                    .map_err(io(path, "could not read a segment's size"))?
                    .len()
            }
            None => consumed,
        };
        let (base, end) = if end < consumed {
            // The store has more than the log: the log was lost or replaced. Nothing in it can
            // be replayed; a new log starts at the store's offset.
            for (_, path) in &found {
                std::fs::remove_file(path).map_err(io(path, "could not remove a segment"))?;
            }
            (consumed, consumed)
        } else {
            (found.last().map_or(end, |(base, _)| *base), end)
        };
        let path = segment_path(dir, base);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path, "could not open a segment"))?;
        sync_dir(dir)?;
        Ok((
            LogWriter {
                dir: dir.to_owned(),
                segment_bytes,
                file: BufWriter::with_capacity(1 << 20, file),
                base,
                end,
            },
            cut,
        ))
    }

    /// Appends one record (not yet durable: see [`LogWriter::sync`]).
    pub fn append(&mut self, received_ns: i64, payload: &[u8]) -> Result<(), LogError> {
        if self.end > self.base
            && self.end - self.base + HEADER_BYTES + payload.len() as u64 > self.segment_bytes
        {
            self.roll()?;
        }
        let time = received_ns.to_le_bytes();
        let crc = crc32c::crc32c_append(crc32c::crc32c(&time), payload);
        let length = u32::try_from(payload.len()).expect("records are bounded by the body limit");
        let path = segment_path(&self.dir, self.base);
        for part in [
            &length.to_le_bytes()[..],
            &crc.to_le_bytes(),
            &time,
            payload,
        ] {
            self.file
                .write_all(part)
                .map_err(io(&path, "could not append a record"))?;
        }
        self.end += HEADER_BYTES + payload.len() as u64;
        Ok(())
    }

    /// Makes everything appended durable (`fdatasync`) and returns the offset it reaches.
    pub fn sync(&mut self) -> Result<u64, LogError> {
        let path = segment_path(&self.dir, self.base);
        self.file
            .flush()
            .map_err(io(&path, "could not write records"))?;
        let file = self.file.get_ref();
        file.sync_data()
            .map_err(io(&path, "could not sync records"))?;
        // A segment deleted under the writer (its folder removed) takes every write and sync
        // and keeps none of them: acknowledging on it would lose what is acknowledged.
        let links = file
            .metadata()
            .map_err(io(&path, "could not read a segment's metadata"))?
            .nlink();
        if links == 0 {
            return Err(LogError::Deleted {
                path: path.display().to_string(),
            });
        }
        Ok(self.end)
    }

    /// Closes the open segment (durably) and begins the next one at the current end.
    fn roll(&mut self) -> Result<(), LogError> {
        self.sync()?;
        let path = segment_path(&self.dir, self.end);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path, "could not create a segment"))?;
        sync_dir(&self.dir)?;
        self.file = BufWriter::with_capacity(1 << 20, file);
        self.base = self.end;
        Ok(())
    }

    /// Drops everything appended after `durable` (the end the last successful
    /// [`LogWriter::sync`] returned), after a write or sync failed (a full disk): the log ends
    /// with its last durable record again and takes appends once there is room.
    pub fn rewind(&mut self, durable: u64) -> Result<(), LogError> {
        // Segments begun after `durable` hold only dropped records.
        let mut base = self.base;
        for (segment_base, path) in segments(&self.dir)?.into_iter().rev() {
            if segment_base <= durable {
                base = segment_base;
                break;
            }
            std::fs::remove_file(&path).map_err(io(&path, "could not remove a segment"))?;
        }
        let path = segment_path(&self.dir, base);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path, "could not open a segment"))?;
        file.set_len(durable - base)
            .map_err(io(&path, "could not cut a segment"))?;
        file.sync_all()
            .map_err(io(&path, "could not sync a segment"))?;
        sync_dir(&self.dir)?;
        // The old buffer's unwritten bytes are dropped with it, unflushed.
        let old = std::mem::replace(&mut self.file, BufWriter::with_capacity(1 << 20, file));
        let _ = old.into_parts();
        self.base = base;
        self.end = durable;
        Ok(())
    }

    /// The offset after the last record appended.
    pub fn end(&self) -> u64 {
        self.end
    }
}

/// A new file's name is durable only once its folder is synced.
fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "could not sync the log folder"))
}

/// Reads records in order from an offset; each consumer has its own.
pub struct LogReader {
    dir: PathBuf,
    position: u64,
    /// The segment being read: its base, its file at `position`.
    open: Option<(u64, std::io::BufReader<File>)>,
}

impl LogReader {
    pub fn new(dir: &Path, position: u64) -> LogReader {
        LogReader {
            dir: dir.to_owned(),
            position,
            open: None,
        }
    }

    pub fn position(&self) -> u64 {
        self.position
    }

    /// Reads whole records that end at or before `until` (what the writer has made durable),
    /// stopping after `max_bytes` of payload.
    pub fn read(
        &mut self,
        until: u64,
        max_bytes: usize,
        out: &mut Vec<Record>,
    ) -> Result<(), LogError> {
        let mut read = 0;
        while self.position < until && read < max_bytes {
            let (base, reader) = match &mut self.open {
                Some(open) => open,
                None => {
                    // The segment holding `position`: the last one starting at or before it.
                    let found = segments(&self.dir)?;
                    let first = found.first().map(|(base, _)| *base);
                    let (base, path) = found
                        .into_iter()
                        .rev()
                        .find(|(base, _)| *base <= self.position)
                        .ok_or_else(|| LogError::Io {
                            path: self.dir.display().to_string(),
                            action: "has no segment holding the offset to read",
                            source: std::io::Error::other(format!(
                                "offset {}, first segment at {first:?}",
                                self.position
                            )),
                        })?;
                    let mut file =
                        File::open(&path).map_err(io(&path, "could not open a segment"))?;
                    file.seek(SeekFrom::Start(self.position - base))
                        .map_err(io(&path, "could not seek in a segment"))?;
                    self.open
                        .insert((base, std::io::BufReader::with_capacity(1 << 20, file)))
                }
            };
            let path = segment_path(&self.dir, *base);
            let size = reader
                .get_ref()
                .metadata()
                .map_err(io(&path, "could not read a segment's size"))?
                .len();
            let in_segment = size - (self.position - *base);
            if in_segment == 0 {
                // This segment is done; the next one starts here.
                self.open = None;
                if !segment_path(&self.dir, self.position).exists() {
                    break;
                }
                continue;
            }
            let (received_ns, payload) = read_record(reader, in_segment.min(until - self.position))
                .map_err(|reason| LogError::Io {
                    path: path.display().to_string(),
                    action: "holds a damaged record below the durable end",
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, reason),
                })?;
            read += payload.len();
            self.position += HEADER_BYTES + payload.len() as u64;
            out.push(Record {
                received_ns,
                payload,
                end: self.position,
            });
        }
        Ok(())
    }
}

/// Deletes the segments that end at or before `offset` (never the last one, which the writer
/// has open); returns the bytes freed.
pub fn remove_segments_before(dir: &Path, offset: u64) -> Result<u64, LogError> {
    let found = segments(dir)?;
    let mut freed = 0;
    for pair in found.windows(2) {
        let ((_, path), (next_base, _)) = (&pair[0], &pair[1]);
        if *next_base <= offset {
            freed += std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(path).map_err(io(path, "could not remove a segment"))?;
        }
    }
    Ok(freed)
}

/// The request log's folder for a store file: beside it, named after it.
pub fn dir_of(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".log");
    PathBuf::from(name)
}

/// The offset after the log's last byte (`None` for a log with no segment).
pub fn end(dir: &Path) -> Result<Option<u64>, LogError> {
    let Some((base, path)) = segments(dir)?.pop() else {
        return Ok(None);
    };
    Ok(Some(
        base + std::fs::metadata(&path)
            .map_err(io(&path, "could not read a segment's size"))?
            .len(),
    ))
}

/// The bytes the log's segments take on disk.
pub fn disk_bytes(dir: &Path) -> Result<u64, LogError> {
    Ok(segments(dir)?
        .iter()
        .map(|(_, path)| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0))
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(dir: &Path, from: u64, until: u64) -> Vec<Record> {
        let mut out = Vec::new();
        LogReader::new(dir, from)
            .read(until, usize::MAX, &mut out)
            .unwrap();
        out
    }

    fn payloads(records: &[Record]) -> Vec<Vec<u8>> {
        records.iter().map(|r| r.payload.clone()).collect()
    }

    #[test]
    fn records_come_back_in_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, cut) = LogWriter::open(dir.path(), 100, 0).unwrap();
        assert_eq!(cut, None);
        let written: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; usize::from(i) * 3]).collect();
        for (i, payload) in written.iter().enumerate() {
            log.append(i as i64, payload).unwrap();
        }
        let end = log.sync().unwrap();
        assert!(
            segments(dir.path()).unwrap().len() > 3,
            "segments of 100 bytes roll"
        );
        let read = records(dir.path(), 0, end);
        assert_eq!(payloads(&read), written);
        assert_eq!(read[7].received_ns, 7);
        assert_eq!(read.last().unwrap().end, end);
        // From the middle, and bounded by what is durable.
        let from = read[4].end;
        let until = read[9].end;
        assert_eq!(payloads(&records(dir.path(), from, until)), written[5..10]);
    }

    #[test]
    fn rewinding_drops_what_followed_the_last_sync_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = LogWriter::open(dir.path(), 100, 0).unwrap();
        for i in 0..3u8 {
            log.append(0, &[i; 40]).unwrap();
        }
        let durable = log.sync().unwrap();
        let segments_then = segments(dir.path()).unwrap().len();
        // A failed group: some of it reached new segments, some only the buffer.
        for i in 3..9u8 {
            log.append(0, &[i; 40]).unwrap();
        }
        let _ = log.file.flush();
        assert!(segments(dir.path()).unwrap().len() > segments_then);
        log.rewind(durable).unwrap();
        assert_eq!(log.end(), durable);
        assert!(
            segments(dir.path())
                .unwrap()
                .iter()
                .all(|(base, _)| *base <= durable),
            "segments begun after the last durable record are gone"
        );
        // Appends go on after the last durable record, and a reopen finds nothing damaged.
        log.append(0, &[42; 40]).unwrap();
        let end = log.sync().unwrap();
        drop(log);
        let (_, cut) = LogWriter::open(dir.path(), 100, 0).unwrap();
        assert_eq!(cut, None);
        let read = records(dir.path(), 0, end);
        let firsts: Vec<u8> = read.iter().map(|r| r.payload[0]).collect();
        assert_eq!(firsts, [0, 1, 2, 42]);
    }

    #[test]
    fn a_torn_tail_is_cut_at_the_last_whole_record_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = LogWriter::open(dir.path(), 1 << 20, 0).unwrap();
        for i in 0..5u8 {
            log.append(0, &[i; 40]).unwrap();
        }
        let end = log.sync().unwrap();
        drop(log);
        let (_, path) = segments(dir.path()).unwrap().pop().unwrap();
        // A crash half way through the last record.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(end - 20).unwrap();
        drop(file);
        let (mut log, cut) = LogWriter::open(dir.path(), 1 << 20, 0).unwrap();
        let cut = cut.expect("the torn record is reported");
        assert_eq!(cut.at, 4 * 56, "four whole records of 16 + 40 bytes");
        assert_eq!(cut.dropped_bytes, 56 - 20);
        assert!(cut.reason.contains("record"), "{}", cut.reason);
        assert_eq!(log.end(), 4 * 56);
        // The log goes on after the cut.
        log.append(9, b"after").unwrap();
        let end = log.sync().unwrap();
        let read = records(dir.path(), 0, end);
        assert_eq!(read.len(), 5);
        assert_eq!(read[4].payload, b"after");
    }

    #[test]
    fn a_flipped_byte_fails_the_checksum_and_drops_what_follows() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = LogWriter::open(dir.path(), 200, 0).unwrap();
        for i in 0..10u8 {
            log.append(0, &[i; 40]).unwrap();
        }
        log.sync().unwrap();
        drop(log);
        let found = segments(dir.path()).unwrap();
        assert!(found.len() >= 3);
        // Flip a payload byte of the first record of the second segment.
        let (base, path) = &found[1];
        let mut bytes = std::fs::read(path).unwrap();
        bytes[20] ^= 0x40;
        std::fs::write(path, bytes).unwrap();
        let (log, cut) = LogWriter::open(dir.path(), 200, 0).unwrap();
        let cut = cut.expect("reported");
        assert_eq!(cut.at, *base);
        assert!(cut.reason.contains("checksum"), "{}", cut.reason);
        assert_eq!(log.end(), *base);
        assert_eq!(
            segments(dir.path()).unwrap().len(),
            2,
            "later segments dropped"
        );
        assert_eq!(records(dir.path(), 0, log.end()).len() as u64, *base / 56);
    }

    #[test]
    fn consumed_segments_are_removed_and_a_lost_log_restarts_at_the_store_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = LogWriter::open(dir.path(), 120, 0).unwrap();
        for i in 0..10u8 {
            log.append(0, &[i; 40]).unwrap();
        }
        let end = log.sync().unwrap();
        let before = disk_bytes(dir.path()).unwrap();
        let middle = records(dir.path(), 0, end)[5].end;
        let freed = remove_segments_before(dir.path(), middle).unwrap();
        assert!(freed > 0);
        assert_eq!(disk_bytes(dir.path()).unwrap(), before - freed);
        // What was not consumed is still there.
        assert_eq!(records(dir.path(), middle, end).len(), 4);
        drop(log);

        let lost = tempfile::tempdir().unwrap();
        let (mut log, cut) = LogWriter::open(lost.path(), 120, 5_000).unwrap();
        assert_eq!((log.end(), cut), (5_000, None));
        log.append(1, b"next").unwrap();
        let end = log.sync().unwrap();
        assert_eq!(
            payloads(&records(lost.path(), 5_000, end)),
            [b"next".to_vec()]
        );
    }
}
