//! Trace files into the span model: OTLP/JSON (one request, or one per line as the
//! OpenTelemetry Collector's file exporter writes), OTLP protobuf (one serialized
//! `ExportTraceServiceRequest`, or a stream of length-delimited ones), Jaeger JSON and Zipkin v2
//! JSON, each optionally gzip-compressed. Every format goes through OTLP and
//! [`crate::otlp::convert`], so a span means the same whichever way it came in.
//!
//! Input is streamed: JSON arrays are read element by element, never whole into memory. The one
//! exception is Zipkin, whose spans are grouped by trace until the input ends, because the two
//! halves of a shared span may stand anywhere in the file.

mod ids;
pub mod jaeger;
mod stream;
pub mod zipkin;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{self, BufRead, BufReader, Cursor, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use archtrace_analyzer::{Span, TraceId};
use flate2::read::MultiGzDecoder;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::otlp::{self, Converted};
pub use crate::otlp::{Conversion, Detail};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OtlpJson,
    OtlpProtobuf,
    Jaeger,
    Zipkin,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::OtlpJson => "OTLP/JSON",
            Format::OtlpProtobuf => "OTLP protobuf",
            Format::Jaeger => "Jaeger JSON",
            Format::Zipkin => "Zipkin v2 JSON",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{source_name}: {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: could not read: {error}")]
    Io {
        source_name: String,
        #[source]
        error: io::Error,
    },
    /// The consumer of the spans (the store) failed; the import stops.
    #[error("could not keep the spans read")]
    Sink(#[source] SinkError),
}

/// Why the consumer of imported spans refused them.
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// What to do with a document (a line, a trace, a span) that cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnBadInput {
    Stop,
    /// Count it and go on with the rest of the input.
    Skip,
}

/// An input: a file or standard input.
pub struct Source {
    pub name: String,
    pub reader: Box<dyn Read + Send>,
}

impl Source {
    pub fn open(path: &std::path::Path) -> Result<Source, ImportError> {
        let name = path.display().to_string();
        if path.as_os_str() == "-" {
            return Ok(Source {
                name: "<stdin>".into(),
                reader: Box::new(io::stdin()),
            });
        }
        let file = std::fs::File::open(path).map_err(|error| ImportError::Io {
            source_name: name.clone(),
            error,
        })?;
        Ok(Source {
            name,
            reader: Box::new(file),
        })
    }
}

/// Counts for one import, over all its inputs.
#[derive(Debug, Default)]
pub struct Summary {
    pub files: u64,
    pub spans: u64,
    /// Spans rejected for invalid ids.
    pub rejected_spans: u64,
    /// Documents (lines, traces, Zipkin spans) that could not be read and were skipped.
    pub bad_documents: u64,
    /// Inputs abandoned part-way because of a syntax error, with `OnBadInput::Skip`.
    pub bad_files: u64,
    trace_ids: HashSet<TraceId>,
    services: HashSet<Arc<str>>,
    /// Earliest and latest span start imported, Unix nanoseconds.
    pub span_range: Option<(i64, i64)>,
}

/// `imported 2 files: 120 spans in 30 traces from 5 services`, and what was rejected if any.
impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "imported {} files: {} spans in {} traces from {} services",
            self.files,
            self.spans,
            self.traces(),
            self.services()
        )?;
        if self.rejected_spans + self.bad_documents + self.bad_files > 0 {
            write!(
                f,
                "\nrejected: {} spans with invalid ids, {} unreadable documents, {} files abandoned",
                self.rejected_spans, self.bad_documents, self.bad_files
            )?;
        }
        Ok(())
    }
}

impl Summary {
    pub fn traces(&self) -> usize {
        self.trace_ids.len()
    }

    pub fn services(&self) -> usize {
        self.services.len()
    }

    fn count(&mut self, converted: &Converted) {
        self.spans += converted.spans.len() as u64;
        self.rejected_spans += converted.rejections.count;
        for span in &converted.spans {
            let range = self
                .span_range
                .get_or_insert((span.start_ns, span.start_ns));
            range.0 = range.0.min(span.start_ns);
            range.1 = range.1.max(span.start_ns);
            self.trace_ids.insert(span.trace_id);
            if !self.services.contains(&span.service) {
                self.services.insert(span.service.clone());
            }
        }
    }
}

/// Counts bytes as they are read, for progress display.
pub struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Reads one input and hands its spans, in batches, to `sink`. `format` `None` detects it.
pub fn read_source(
    source: Source,
    format: Option<Format>,
    on_bad: OnBadInput,
    conversion: &Conversion,
    bytes_read: Arc<AtomicU64>,
    summary: &mut Summary,
    sink: &mut dyn FnMut(Vec<Span>) -> Result<(), SinkError>,
) -> Result<(), ImportError> {
    let name = source.name.clone();
    let counted = CountingReader {
        inner: source.reader,
        count: bytes_read,
    };
    let (reader, format) = open_and_detect(counted, format, &name)?;
    summary.files += 1;
    let mut reading = Reading {
        name: &name,
        on_bad,
        conversion,
        summary,
        sink,
        failure: None,
    };
    let outcome = match format {
        Format::OtlpJson => read_otlp_json(reader, &mut reading),
        Format::OtlpProtobuf => read_otlp_protobuf(reader, &mut reading),
        Format::Jaeger => read_json_document(reader, &mut reading, JaegerDocument),
        Format::Zipkin => read_json_document(reader, &mut reading, ZipkinDocument::default()),
    };
    match outcome {
        Err(ImportError::Invalid { .. }) if on_bad == OnBadInput::Skip => {
            reading.summary.bad_files += 1;
            Ok(())
        }
        other => other,
    }
}

struct Reading<'a> {
    name: &'a str,
    on_bad: OnBadInput,
    conversion: &'a Conversion,
    summary: &'a mut Summary,
    sink: &'a mut dyn FnMut(Vec<Span>) -> Result<(), SinkError>,
    /// A sink failure raised inside a serde visitor, which can only return serde errors.
    failure: Option<ImportError>,
}

impl Reading<'_> {
    fn invalid(&self, message: impl Into<String>) -> ImportError {
        ImportError::Invalid {
            source_name: self.name.to_owned(),
            message: message.into(),
        }
    }

    fn emit(&mut self, request: ExportTraceServiceRequest) -> Result<(), ImportError> {
        self.emit_converted(otlp::convert_with(request, self.conversion))
    }

    fn emit_converted(&mut self, converted: Converted) -> Result<(), ImportError> {
        self.summary.count(&converted);
        if converted.spans.is_empty() {
            return Ok(());
        }
        (self.sink)(converted.spans).map_err(ImportError::Sink)
    }

    /// A document that could not be read: stop, or count it and go on.
    fn bad_document(&mut self, message: String) -> Result<(), ImportError> {
        match self.on_bad {
            OnBadInput::Stop => Err(self.invalid(message)),
            OnBadInput::Skip => {
                tracing::warn!(source = self.name, "skipped: {message}");
                self.summary.bad_documents += 1;
                Ok(())
            }
        }
    }
}

type Input = Box<dyn BufRead + Send>;

fn open_and_detect(
    reader: impl Read + Send + 'static,
    format: Option<Format>,
    name: &str,
) -> Result<(Input, Format), ImportError> {
    let io_error = |error| ImportError::Io {
        source_name: name.to_owned(),
        error,
    };
    let mut buffered = BufReader::with_capacity(1 << 20, reader);
    let gzipped = buffered
        .fill_buf()
        .map_err(io_error)?
        .starts_with(&[0x1f, 0x8b]);
    let mut input: Input = if gzipped {
        Box::new(BufReader::with_capacity(
            1 << 20,
            MultiGzDecoder::new(buffered),
        ))
    } else {
        Box::new(buffered)
    };
    // Look at the start of the content to tell the format.
    let mut head = Vec::with_capacity(64 * 1024);
    (&mut input)
        .take(64 * 1024)
        .read_to_end(&mut head)
        .map_err(io_error)?;
    // A byte-order mark (Windows editors write one) is not JSON; parsers stop at it.
    if head.starts_with(b"\xEF\xBB\xBF") {
        head.drain(..3);
    }
    let format = match format {
        Some(format) => format,
        None => detect(&head).ok_or_else(|| ImportError::Invalid {
            source_name: name.to_owned(),
            message: if head.iter().all(u8::is_ascii_whitespace) {
                "the input is empty".into()
            } else {
                "could not tell the format (expected OTLP/JSON, OTLP protobuf, Jaeger JSON or Zipkin v2 JSON); pass --format".into()
            },
        })?,
    };
    Ok((
        Box::new(BufReader::new(Cursor::new(head).chain(input))),
        format,
    ))
}

/// Tells the format from the first bytes of the content.
pub fn detect(head: &[u8]) -> Option<Format> {
    let text = head;
    let start = text.iter().position(|b| !b.is_ascii_whitespace())?;
    match text[start] {
        b'[' => Some(Format::Zipkin),
        b'{' => {
            let contains = |needle: &[u8]| text.windows(needle.len()).any(|w| w == needle);
            match first_key(&text[start + 1..]) {
                Some("resourceSpans" | "resource_spans") => Some(Format::OtlpJson),
                Some("data" | "traceID" | "spans" | "processes") => Some(Format::Jaeger),
                _ if contains(b"\"resourceSpans\"") => Some(Format::OtlpJson),
                _ if contains(b"\"traceID\"") => Some(Format::Jaeger),
                _ => None,
            }
        }
        _ => looks_like_protobuf(head).then_some(Format::OtlpProtobuf),
    }
}

/// A protobuf `ExportTraceServiceRequest` starts with field 1 (`resource_spans`, tag byte 0x0a);
/// a length-delimited stream starts with a varint length and then that tag.
fn looks_like_protobuf(head: &[u8]) -> bool {
    if head.first() == Some(&0x0a) {
        return true;
    }
    let varint_len = head.iter().take(5).position(|b| b & 0x80 == 0);
    varint_len.is_some_and(|end| head.get(end + 1) == Some(&0x0a))
}

fn first_key(after_brace: &[u8]) -> Option<&str> {
    let start = after_brace.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = after_brace[start..].strip_prefix(b"\"")?;
    let end = rest.iter().position(|b| *b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// OTLP/JSON: a stream of requests, one per line or pretty-printed one after another.
fn read_otlp_json(reader: Input, reading: &mut Reading) -> Result<(), ImportError> {
    let name = reading.name.to_owned();
    let mut documents = stream::JsonDocuments::new(reader);
    stream::decode_in_parallel(
        reading,
        || {
            documents.next_document().map_err(|error| ImportError::Io {
                source_name: name.clone(),
                error,
            })
        },
        stream::decode_json,
    )
}

/// OTLP protobuf: one request, or a stream of varint-length-delimited requests.
fn read_otlp_protobuf(mut reader: Input, reading: &mut Reading) -> Result<(), ImportError> {
    let io_error = |error| ImportError::Io {
        source_name: reading.name.to_owned(),
        error,
    };
    let single = reader.fill_buf().map_err(io_error)?.first() == Some(&0x0a);
    if single {
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).map_err(io_error)?;
        let mut spans = Vec::new();
        let rejections =
            otlp::convert_decodable(&bytes, reading.conversion, &mut spans).map_err(|err| {
                reading.invalid(format!("not a protobuf ExportTraceServiceRequest: {err}"))
            })?;
        return reading.emit_converted(Converted { spans, rejections });
    }
    let name = reading.name.to_owned();
    let mut messages = stream::DelimitedMessages::new(reader);
    stream::decode_in_parallel(
        reading,
        || {
            messages
                .next_message()
                .map_err(|message| ImportError::Invalid {
                    source_name: name.clone(),
                    message,
                })
        },
        stream::decode_protobuf,
    )
}

/// A JSON format read as one document through a streaming visitor.
trait JsonDocument {
    const NAME: &'static str;
    fn read<'de, D: serde::Deserializer<'de>>(
        &mut self,
        deserializer: D,
        reading: &mut Reading,
    ) -> Result<(), D::Error>;
    fn finish(self, reading: &mut Reading) -> Result<(), ImportError>;
}

fn read_json_document<D: JsonDocument>(
    reader: Input,
    reading: &mut Reading,
    mut document: D,
) -> Result<(), ImportError> {
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    let outcome = document.read(&mut deserializer, reading);
    if let Some(failure) = reading.failure.take() {
        return Err(failure);
    }
    outcome.map_err(|err| reading.invalid(format!("not valid {}: {err}", D::NAME)))?;
    deserializer
        .end()
        .map_err(|err| reading.invalid(format!("unexpected data after the document: {err}")))?;
    document.finish(reading)
}

/// Streams the elements of a JSON array to `each`, as raw JSON.
struct EachElement<'r, 'a, F> {
    reading: &'r mut Reading<'a>,
    each: F,
}

impl<'de, F> Visitor<'de> for EachElement<'_, '_, F>
where
    F: FnMut(&mut Reading, u64, &RawValue) -> Result<(), ImportError>,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while let Some(raw) = seq.next_element::<Box<RawValue>>()? {
            index += 1;
            if let Err(err) = (self.each)(self.reading, index, &raw) {
                self.reading.failure = Some(err);
                return Err(serde::de::Error::custom("stopped"));
            }
        }
        Ok(())
    }
}

impl<'de, F> DeserializeSeed<'de> for EachElement<'_, '_, F>
where
    F: FnMut(&mut Reading, u64, &RawValue) -> Result<(), ImportError>,
{
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

fn jaeger_trace(reading: &mut Reading, index: u64, raw: &RawValue) -> Result<(), ImportError> {
    match serde_json::from_str::<jaeger::JaegerTrace>(raw.get()) {
        Ok(trace) => reading.emit(jaeger::to_otlp(trace)),
        Err(err) => reading.bad_document(format!(
            "trace {index} of \"data\": {err} (line and column within the trace)"
        )),
    }
}

struct JaegerDocument;

impl JsonDocument for JaegerDocument {
    const NAME: &'static str = "Jaeger JSON";

    fn read<'de, D: serde::Deserializer<'de>>(
        &mut self,
        deserializer: D,
        reading: &mut Reading,
    ) -> Result<(), D::Error> {
        struct Top<'r, 'a>(&'r mut Reading<'a>);
        impl<'de> Visitor<'de> for Top<'_, '_> {
            type Value = ();
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"{"data": [traces]}, one trace {"traceID", "spans", "processes"}, or an array of traces"#)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
                // One trace object: its fields are collected; "data" holds many traces.
                let mut single = serde_json::Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "data" {
                        map.next_value_seed(EachElement {
                            reading: &mut *self.0,
                            each: jaeger_trace,
                        })?;
                    } else {
                        single.insert(key, map.next_value()?);
                    }
                }
                if single.contains_key("spans") {
                    let raw = serde_json::value::to_raw_value(&single)
                        .map_err(serde::de::Error::custom)?;
                    if let Err(err) = jaeger_trace(self.0, 1, &raw) {
                        self.0.failure = Some(err);
                        return Err(serde::de::Error::custom("stopped"));
                    }
                }
                Ok(())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
                EachElement {
                    reading: self.0,
                    each: jaeger_trace,
                }
                .visit_seq(seq)
            }
        }
        deserializer.deserialize_any(Top(reading))
    }

    fn finish(self, _reading: &mut Reading) -> Result<(), ImportError> {
        Ok(())
    }
}

/// Zipkin spans waiting for the end of input, grouped by trace in order of first appearance.
#[derive(Default)]
struct ZipkinTraces {
    order: Vec<Vec<u8>>,
    spans: HashMap<Vec<u8>, Vec<zipkin::ZipkinSpan>>,
}

#[derive(Default)]
struct ZipkinDocument {
    pending: ZipkinTraces,
}

impl JsonDocument for ZipkinDocument {
    const NAME: &'static str = "Zipkin v2 JSON";

    fn read<'de, D: serde::Deserializer<'de>>(
        &mut self,
        deserializer: D,
        reading: &mut Reading,
    ) -> Result<(), D::Error> {
        let pending = &mut self.pending;
        deserializer.deserialize_seq(EachElement {
            reading,
            each: |reading: &mut Reading, index: u64, raw: &RawValue| match serde_json::from_str::<
                zipkin::ZipkinSpan,
            >(raw.get())
            {
                Ok(span) => {
                    let key = span.trace_key();
                    if !pending.spans.contains_key(&key) {
                        pending.order.push(key.clone());
                    }
                    pending.spans.entry(key).or_default().push(span);
                    Ok(())
                }
                Err(err) => reading.bad_document(format!(
                    "span {index}: {err} (line and column within the span)"
                )),
            },
        })
    }

    fn finish(self, reading: &mut Reading) -> Result<(), ImportError> {
        let mut spans = self.pending.spans;
        for key in self.pending.order {
            if let Some(trace) = spans.remove(&key) {
                reading.emit(zipkin::trace_to_otlp(trace))?;
            }
        }
        Ok(())
    }
}
