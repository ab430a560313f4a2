//! Streams of OTLP requests (JSON documents one after another, or length-delimited protobuf)
//! are cut into requests on the reading thread and decoded on worker threads, one per core.
//! Results come back in input order, so spans, errors and skips are reported as if read in one
//! pass.

use std::collections::VecDeque;
use std::io::{self, BufRead, Read};
use std::sync::{mpsc, Mutex};

use super::{ImportError, Input, Reading};
use crate::otlp::{self, Conversion, Converted};

/// One request cut out of a stream, not decoded yet.
pub(super) struct Document {
    /// 1-based position in the stream.
    pub index: u64,
    /// Where it starts in the (decompressed) input.
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// What a worker made of a document.
pub(super) enum Decoded {
    Spans(Converted),
    /// The input is broken here: reading it cannot go on.
    Broken(String),
    /// A well-formed document that is not a request; it can be skipped.
    NotARequest(String),
}

/// Documents go to the workers in batches of about this many bytes, so that small requests
/// (one short line each) do not cost a channel round trip apiece.
const JOB_BYTES: usize = 1 << 20;

type Job = (Vec<Document>, mpsc::SyncSender<Vec<Decoded>>);

/// Decodes the documents `next` cuts out, on worker threads, and hands the results to
/// `reading` in input order.
pub(super) fn decode_in_parallel(
    reading: &mut Reading,
    mut next: impl FnMut() -> Result<Option<Document>, ImportError>,
    decode: fn(&[u8], &Conversion) -> Decoded,
) -> Result<(), ImportError> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let conversion = reading.conversion;
    let (job_sender, job_receiver) = mpsc::sync_channel::<Job>(workers);
    let job_receiver = Mutex::new(job_receiver);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let job = job_receiver.lock().expect("no worker panics").recv();
                let Ok((documents, reply)) = job else {
                    return;
                };
                let decoded = documents
                    .iter()
                    .map(|document| decode(&document.bytes, conversion))
                    .collect();
                // The reader has stopped early when nobody listens; nothing is lost then.
                let _ = reply.send(decoded);
            });
        }
        // Owned here, so that returning closes the channel and the workers end.
        let job_sender = job_sender;
        // Results of the batches in flight, oldest first, with where each document stood.
        let mut in_flight = VecDeque::new();
        let mut ended = false;
        loop {
            while !ended && in_flight.len() < 2 * workers {
                let mut documents = Vec::new();
                let mut bytes = 0;
                while bytes < JOB_BYTES {
                    match next()? {
                        Some(document) => {
                            bytes += document.bytes.len();
                            documents.push(document);
                        }
                        None => {
                            ended = true;
                            break;
                        }
                    }
                }
                if documents.is_empty() {
                    break;
                }
                let positions: Vec<(u64, u64)> =
                    documents.iter().map(|d| (d.index, d.offset)).collect();
                let (reply, result) = mpsc::sync_channel(1);
                job_sender
                    .send((documents, reply))
                    .expect("workers run until the job channel closes");
                in_flight.push_back((positions, result));
            }
            let Some((positions, result)) = in_flight.pop_front() else {
                return Ok(());
            };
            let decoded = result.recv().expect("a decoding worker panicked");
            for ((index, offset), decoded) in positions.into_iter().zip(decoded) {
                let at = format!("request {index} (byte {offset})");
                match decoded {
                    Decoded::Spans(converted) => reading.emit_converted(converted)?,
                    Decoded::Broken(message) => {
                        return Err(reading.invalid(format!("{at}: {message}")))
                    }
                    Decoded::NotARequest(message) => {
                        reading.bad_document(format!("{at}: {message}"))?
                    }
                }
            }
        }
    })
}

pub(super) fn decode_json(bytes: &[u8], conversion: &Conversion) -> Decoded {
    match crate::otlp_json::decode(bytes) {
        Ok(request) => Decoded::Spans(otlp::convert_with(request, conversion)),
        Err(err) if err.is_data() => Decoded::NotARequest(format!(
            "not an OTLP/JSON ExportTraceServiceRequest: {err} (line and column within the request)"
        )),
        Err(err) => Decoded::Broken(format!("not valid JSON: {err}")),
    }
}

pub(super) fn decode_protobuf(bytes: &[u8], conversion: &Conversion) -> Decoded {
    let mut spans = Vec::new();
    match otlp::convert_decodable(bytes, conversion, &mut spans) {
        Ok(rejections) => Decoded::Spans(Converted { spans, rejections }),
        Err(err) => {
            Decoded::NotARequest(format!("not a protobuf ExportTraceServiceRequest: {err}"))
        }
    }
}

/// Cuts JSON documents standing one after another (one per line, or pretty-printed) out of a
/// stream by following brackets and strings, without parsing them: the decoder does that.
pub(super) struct JsonDocuments {
    input: Input,
    offset: u64,
    index: u64,
}

impl JsonDocuments {
    pub fn new(input: Input) -> Self {
        JsonDocuments {
            input,
            offset: 0,
            index: 0,
        }
    }

    pub fn next_document(&mut self) -> io::Result<Option<Document>> {
        if !self.skip_whitespace()? {
            return Ok(None);
        }
        let offset = self.offset;
        let mut bytes = Vec::new();
        let mut scan = Scan::default();
        loop {
            let available = self.input.fill_buf()?;
            // Input that ends inside a document leaves it incomplete; the decoder names that.
            if available.is_empty() {
                break;
            }
            let (used, complete) = scan.feed(available);
            bytes.extend_from_slice(&available[..used]);
            self.consume(used);
            if complete {
                break;
            }
        }
        self.index += 1;
        Ok(Some(Document {
            index: self.index,
            offset,
            bytes,
        }))
    }

    /// Skips whitespace; false at the end of the input.
    fn skip_whitespace(&mut self) -> io::Result<bool> {
        loop {
            let available = self.input.fill_buf()?;
            if available.is_empty() {
                return Ok(false);
            }
            let skip = available
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(available.len());
            let more = skip == available.len();
            self.consume(skip);
            if !more {
                return Ok(true);
            }
        }
    }

    fn consume(&mut self, bytes: usize) {
        self.input.consume(bytes);
        self.offset += bytes as u64;
    }
}

/// Where a scan stands in a JSON document.
#[derive(Default)]
struct Scan {
    depth: u32,
    in_string: bool,
    escaped: bool,
}

impl Scan {
    /// Follows `bytes`; returns how many belong to the document and whether it ended there.
    fn feed(&mut self, bytes: &[u8]) -> (usize, bool) {
        let mut at = 0;
        while at < bytes.len() {
            if self.escaped {
                self.escaped = false;
                at += 1;
                continue;
            }
            if self.in_string {
                match memchr::memchr2(b'"', b'\\', &bytes[at..]) {
                    Some(found) => {
                        at += found;
                        if bytes[at] == b'\\' {
                            self.escaped = true;
                        } else {
                            self.in_string = false;
                        }
                        at += 1;
                    }
                    None => return (bytes.len(), false),
                }
                continue;
            }
            match bytes[at] {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return (at + 1, true);
                    }
                }
                // Something other than an object or array at the top ends with its line.
                b'\n' if self.depth == 0 => return (at + 1, true),
                _ => {}
            }
            at += 1;
        }
        (bytes.len(), false)
    }
}

/// Cuts varint-length-delimited protobuf messages out of a stream.
pub(super) struct DelimitedMessages {
    input: Input,
    offset: u64,
    index: u64,
}

impl DelimitedMessages {
    pub fn new(input: Input) -> Self {
        DelimitedMessages {
            input,
            offset: 0,
            index: 0,
        }
    }

    /// The next message; `Err` carries a message that names the problem.
    pub fn next_message(&mut self) -> Result<Option<Document>, String> {
        let position = format!("request {} (byte {})", self.index + 1, self.offset);
        let Some((length, prefix_len)) = self
            .read_varint()
            .map_err(|err| format!("{position}: bad length prefix: {err}"))?
        else {
            return Ok(None);
        };
        let mut bytes = vec![0; length as usize];
        self.input.read_exact(&mut bytes).map_err(|err| {
            format!("{position}: {length} bytes announced, input ended early: {err}")
        })?;
        self.index += 1;
        let document = Document {
            index: self.index,
            offset: self.offset,
            bytes,
        };
        self.offset += prefix_len + length;
        Ok(Some(document))
    }

    /// Reads a varint length prefix; `None` at a clean end of input.
    fn read_varint(&mut self) -> Result<Option<(u64, u64)>, String> {
        let mut value = 0u64;
        for index in 0..10 {
            let mut byte = [0u8];
            match self.input.read(&mut byte) {
                Ok(0) if index == 0 => return Ok(None),
                Ok(0) => return Err("input ended inside a length prefix".into()),
                Ok(_) => {}
                Err(err) => return Err(err.to_string()),
            }
            value |= u64::from(byte[0] & 0x7f) << (7 * index);
            if byte[0] & 0x80 == 0 {
                if value > 1 << 30 {
                    return Err(format!(
                        "length {value} is over 1 GiB; is this really a length-delimited stream?"
                    ));
                }
                return Ok(Some((value, index as u64 + 1)));
            }
        }
        Err("length prefix longer than 10 bytes".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn documents(text: &str, chunk: usize) -> Vec<(u64, String)> {
        // A reader that hands out `chunk` bytes at a time, so documents cross buffer edges.
        let reader = io::BufReader::with_capacity(chunk, io::Cursor::new(text.to_owned()));
        let mut split = JsonDocuments::new(Box::new(reader));
        let mut out = Vec::new();
        while let Some(document) = split.next_document().unwrap() {
            out.push((document.offset, String::from_utf8(document.bytes).unwrap()));
        }
        out
    }

    #[test]
    fn json_documents_are_cut_at_their_closing_bracket_whatever_the_layout() {
        let text = "{\"a\":\"}{\\\"\"}\n\n  {\n \"b\": [1, {\"c\": \"]\"}]\n}{}\n[\"x\"]";
        for chunk in [1, 2, 3, 7, 64] {
            assert_eq!(
                documents(text, chunk),
                vec![
                    (0, "{\"a\":\"}{\\\"\"}".to_owned()),
                    (16, "{\n \"b\": [1, {\"c\": \"]\"}]\n}".to_owned()),
                    (41, "{}".to_owned()),
                    (44, "[\"x\"]".to_owned()),
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn json_junk_at_the_top_ends_with_its_line_and_an_open_document_with_the_input() {
        assert_eq!(
            documents("nope\n{\"a\": [1,", 4),
            vec![(0, "nope\n".to_owned()), (5, "{\"a\": [1,".to_owned())]
        );
    }
}
