//! OTLP trace requests read straight from their protobuf bytes.
//!
//! Decoding with prost builds a tree of owned strings and vectors (a dozen allocations a span)
//! only for conversion to drop it again: on the ingest path that was most of the work. Here the
//! bytes are walked in place. Checking a request ([`read_span`] and what it calls) accepts and
//! rejects what prost's decoding does (well-formed fields of the expected wire types, UTF-8
//! strings; unknown fields are skipped), except that values nest at most [`MAX_DEPTH`] deep,
//! less than prost allows.

use std::fmt;

/// Nesting of attribute values (arrays in lists in arrays...) and of groups at most, so that
/// hostile input cannot exhaust the stack. Within prost's recursion limit (100 messages deep,
/// and a list nested in a link's attribute is 6 + 3 a level), so that what this reader takes,
/// prost decodes too.
const MAX_DEPTH: u32 = 30;

/// Why bytes are not an OTLP trace request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    message: String,
}

impl WireError {
    // Errors are rare: kept out of line, the walking code stays small and fast.
    #[cold]
    #[inline(never)]
    fn new(message: impl Into<String>) -> Self {
        WireError {
            message: message.into(),
        }
    }

    /// Names the message the problem was found in, outermost first.
    fn inside(mut self, message: &str) -> Self {
        self.message = format!("{message}.{}", self.message);
        self
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WireError {}

type Result<T> = std::result::Result<T, WireError>;

#[derive(Clone, Copy, Debug)]
pub enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
    /// A group (a deprecated encoding no OTLP field uses), skipped.
    Group,
}

impl<'a> Field<'a> {
    #[cold]
    #[inline(never)]
    fn wrong_type(self, number: u32, expected: &str) -> WireError {
        let found = match self {
            Field::Varint(_) => "varint",
            Field::Fixed64(_) => "64-bit",
            Field::Fixed32(_) => "32-bit",
            Field::Bytes(_) => "length-delimited",
            Field::Group => "group",
        };
        WireError::new(format!(
            "field {number}: invalid wire type: {found} (expected {expected})"
        ))
    }

    pub fn bytes(self, number: u32) -> Result<&'a [u8]> {
        match self {
            Field::Bytes(bytes) => Ok(bytes),
            other => Err(other.wrong_type(number, "length-delimited")),
        }
    }

    #[inline]
    pub fn text(self, number: u32) -> Result<&'a str> {
        std::str::from_utf8(self.bytes(number)?).map_err(|_| not_utf8(number))
    }

    pub fn varint(self, number: u32) -> Result<u64> {
        match self {
            Field::Varint(value) => Ok(value),
            other => Err(other.wrong_type(number, "varint")),
        }
    }

    pub fn fixed64(self, number: u32) -> Result<u64> {
        match self {
            Field::Fixed64(value) => Ok(value),
            other => Err(other.wrong_type(number, "64-bit")),
        }
    }

    fn fixed32(self, number: u32) -> Result<u32> {
        match self {
            Field::Fixed32(value) => Ok(value),
            other => Err(other.wrong_type(number, "32-bit")),
        }
    }
}

#[cold]
#[inline(never)]
fn not_utf8(number: u32) -> WireError {
    WireError::new(format!(
        "field {number}: invalid string value: data is not UTF-8 encoded"
    ))
}

/// The fields of one message, in the order they were written.
pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    pub fn new(message: &'a [u8]) -> Self {
        Fields { rest: message }
    }

    #[inline]
    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        if len > self.rest.len() {
            return Err(WireError::new(
                "buffer underflow: a field runs past its message",
            ));
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }

    #[inline]
    fn varint(&mut self) -> Result<u64> {
        // Most varints (keys, lengths, small numbers) are one byte.
        if let Some((&byte, rest)) = self.rest.split_first() {
            if byte < 0x80 {
                self.rest = rest;
                return Ok(u64::from(byte));
            }
        }
        self.long_varint()
    }

    fn long_varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for (index, &byte) in self.rest.iter().take(10).enumerate() {
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte < 0x80 {
                // A tenth byte holds one bit of a 64-bit value.
                if index == 9 && byte > 1 {
                    break;
                }
                self.rest = &self.rest[index + 1..];
                return Ok(value);
            }
        }
        Err(WireError::new("invalid varint"))
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    /// The next field's number and value; `None` at the message's end.
    #[inline]
    pub fn next_field(&mut self) -> Result<Option<(u32, Field<'a>)>> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let (number, wire_type) = self.key()?;
        let field = match wire_type {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed64(u64::from_le_bytes(self.fixed()?)),
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| WireError::new("invalid length"))?;
                Field::Bytes(self.take(len)?)
            }
            3 => {
                self.skip_group(number, 1)?;
                Field::Group
            }
            4 => return Err(WireError::new("unexpected end group tag")),
            5 => Field::Fixed32(u32::from_le_bytes(self.fixed()?)),
            other => return Err(WireError::new(format!("invalid wire type value: {other}"))),
        };
        Ok(Some((number, field)))
    }

    #[inline]
    fn key(&mut self) -> Result<(u32, u64)> {
        let key = self.varint()?;
        let number = u32::try_from(key >> 3)
            .ok()
            .filter(|number| (1..1 << 29).contains(number))
            .ok_or_else(|| WireError::new(format!("invalid key value: {key}")))?;
        Ok((number, key & 7))
    }

    fn skip_group(&mut self, group: u32, depth: u32) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(WireError::new("recursion limit reached"));
        }
        loop {
            if self.rest.is_empty() {
                return Err(WireError::new("a group has no end"));
            }
            let (number, wire_type) = self.key()?;
            match wire_type {
                0 => {
                    self.varint()?;
                }
                1 => {
                    self.take(8)?;
                }
                2 => {
                    let len = usize::try_from(self.varint()?)
                        .map_err(|_| WireError::new("invalid length"))?;
                    self.take(len)?;
                }
                3 => self.skip_group(number, depth + 1)?,
                4 if number == group => return Ok(()),
                4 => return Err(WireError::new("unexpected end group tag")),
                5 => {
                    self.take(4)?;
                }
                other => return Err(WireError::new(format!("invalid wire type value: {other}"))),
            }
        }
    }
}

/// Calls `each` with every field of `message`, named `name` in errors.
pub fn for_each_field<'a>(
    message: &'a [u8],
    name: &str,
    mut each: impl FnMut(u32, Field<'a>) -> Result<()>,
) -> Result<()> {
    let mut fields = Fields::new(message);
    let walked = (|| -> Result<()> {
        while let Some((number, field)) = fields.next_field()? {
            each(number, field)?;
        }
        Ok(())
    })();
    walked.map_err(|err| err.inside(name))
}

/// An attribute's value, borrowed from the request. Arrays and lists stay encoded: they are
/// only ever written out as JSON.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    /// No value, or an `AnyValue` with none set.
    Empty,
    Text(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    Array(&'a [u8]),
    List(&'a [u8]),
    /// An index into a dictionary OTLP's profiles use; traces have none.
    TextIndex(i32),
}

/// How deep nested values are checked: `Checked` reads values already checked (no further
/// checks, so writing them out stays linear in their size).
#[derive(Clone, Copy)]
pub enum Depth {
    Check(u32),
    Checked,
}

impl Depth {
    fn deeper(self) -> Result<Depth> {
        match self {
            Depth::Check(depth) if depth >= MAX_DEPTH => {
                Err(WireError::new("recursion limit reached"))
            }
            Depth::Check(depth) => Ok(Depth::Check(depth + 1)),
            Depth::Checked => Ok(Depth::Checked),
        }
    }
}

/// `AnyValue`. Of several values set, the last counts.
pub fn any_value(message: &[u8], depth: Depth) -> Result<Value<'_>> {
    let mut value = Value::Empty;
    for_each_field(message, "AnyValue", |number, field| {
        value = match number {
            1 => Value::Text(field.text(number)?),
            2 => Value::Bool(field.varint(number)? != 0),
            3 => Value::Int(field.varint(number)? as i64),
            4 => Value::Double(f64::from_bits(field.fixed64(number)?)),
            5 => {
                let array = field.bytes(number)?;
                if let Depth::Check(_) = depth {
                    let nested = depth.deeper()?;
                    for_each_field(array, "ArrayValue", |number, field| {
                        if number == 1 {
                            any_value(field.bytes(number)?, nested)?;
                        }
                        Ok(())
                    })?;
                }
                Value::Array(array)
            }
            6 => {
                let list = field.bytes(number)?;
                if let Depth::Check(_) = depth {
                    let nested = depth.deeper()?;
                    for_each_field(list, "KeyValueList", |number, field| {
                        if number == 1 {
                            key_value(field.bytes(number)?, nested)?;
                        }
                        Ok(())
                    })?;
                }
                Value::List(list)
            }
            7 => Value::Bytes(field.bytes(number)?),
            8 => Value::TextIndex(field.varint(number)? as i32),
            _ => return Ok(()),
        };
        Ok(())
    })?;
    Ok(value)
}

/// `KeyValue`: the key and its value.
pub fn key_value(message: &[u8], depth: Depth) -> Result<(&str, Value<'_>)> {
    let mut key = "";
    let mut value = Value::Empty;
    for_each_field(message, "KeyValue", |number, field| {
        match number {
            1 => key = field.text(number)?,
            2 => value = any_value(field.bytes(number)?, depth)?,
            3 => {
                field.varint(number)?;
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok((key, value))
}

/// The items of an encoded array, or the pairs of an encoded list, already checked.
pub fn nested_items<'a>(encoded: &'a [u8], mut each: impl FnMut(&'a [u8])) -> Result<()> {
    let mut fields = Fields::new(encoded);
    while let Some((number, field)) = fields.next_field()? {
        if number == 1 {
            each(field.bytes(number)?);
        }
    }
    Ok(())
}

/// A link of a span: its ids, and its message for the attributes.
#[derive(Clone, Copy, Debug)]
pub struct LinkFields<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub message: &'a [u8],
}

/// What a span's message holds, borrowed. Its attributes and links are collected into
/// vectors the caller reuses from span to span.
#[derive(Debug, Default)]
pub struct SpanFields<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
    pub trace_state: &'a str,
    pub name: &'a str,
    pub kind: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub events: u32,
    pub status_code: i32,
    pub status_message: &'a str,
}

/// Checks a `Span` wholly and reads what conversion needs of it.
pub fn read_span<'a>(
    message: &'a [u8],
    attributes: &mut Vec<(&'a str, Value<'a>)>,
    links: &mut Vec<LinkFields<'a>>,
) -> Result<SpanFields<'a>> {
    attributes.clear();
    links.clear();
    let mut span = SpanFields::default();
    for_each_field(message, "Span", |number, field| {
        match number {
            1 => span.trace_id = field.bytes(number)?,
            2 => span.span_id = field.bytes(number)?,
            3 => span.trace_state = field.text(number)?,
            4 => span.parent_span_id = field.bytes(number)?,
            5 => span.name = field.text(number)?,
            6 => span.kind = field.varint(number)? as i32,
            7 => span.start_time_unix_nano = field.fixed64(number)?,
            8 => span.end_time_unix_nano = field.fixed64(number)?,
            9 => attributes.push(key_value(field.bytes(number)?, Depth::Check(0))?),
            11 => {
                check_event(field.bytes(number)?)?;
                span.events = span.events.saturating_add(1);
            }
            13 => links.push(read_link(field.bytes(number)?)?),
            15 => read_status(field.bytes(number)?, &mut span)?,
            10 | 12 | 14 => {
                field.varint(number)?;
            }
            16 => {
                field.fixed32(number)?;
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(span)
}

/// Checks every attribute in field `number` of `message`.
fn check_attributes(message: &[u8], name: &str, attributes_field: u32) -> Result<()> {
    for_each_field(message, name, |number, field| {
        if number == attributes_field {
            key_value(field.bytes(number)?, Depth::Check(0))?;
        }
        Ok(())
    })
}

fn check_event(message: &[u8]) -> Result<()> {
    check_attributes(message, "Event", 3)?;
    for_each_field(message, "Event", |number, field| {
        match number {
            1 => {
                field.fixed64(number)?;
            }
            2 => {
                field.text(number)?;
            }
            4 => {
                field.varint(number)?;
            }
            _ => {}
        }
        Ok(())
    })
}

fn read_link(message: &[u8]) -> Result<LinkFields<'_>> {
    check_attributes(message, "Link", 4)?;
    let mut link = LinkFields {
        trace_id: &[],
        span_id: &[],
        message,
    };
    for_each_field(message, "Link", |number, field| {
        match number {
            1 => link.trace_id = field.bytes(number)?,
            2 => link.span_id = field.bytes(number)?,
            3 => {
                field.text(number)?;
            }
            5 => {
                field.varint(number)?;
            }
            6 => {
                field.fixed32(number)?;
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(link)
}

/// `Status`; a second one in the same span overrides what it sets, as prost merges them.
fn read_status<'a>(message: &'a [u8], span: &mut SpanFields<'a>) -> Result<()> {
    for_each_field(message, "Status", |number, field| {
        match number {
            2 => span.status_message = field.text(number)?,
            3 => span.status_code = field.varint(number)? as i32,
            _ => {}
        }
        Ok(())
    })
}

/// Checks a `Resource` (attributes and entity references).
pub fn check_resource(message: &[u8]) -> Result<()> {
    check_attributes(message, "Resource", 1)?;
    for_each_field(message, "Resource", |number, field| {
        match number {
            2 => {
                field.varint(number)?;
            }
            3 => for_each_field(field.bytes(number)?, "EntityRef", |number, field| {
                if (1..=4).contains(&number) {
                    field.text(number)?;
                }
                Ok(())
            })?,
            _ => {}
        }
        Ok(())
    })
}

/// Checks an `InstrumentationScope` and gives its name and version (either may be absent).
pub fn read_scope(message: &[u8]) -> Result<(Option<&str>, Option<&str>)> {
    check_attributes(message, "InstrumentationScope", 3)?;
    let (mut name, mut version) = (None, None);
    for_each_field(message, "InstrumentationScope", |number, field| {
        match number {
            1 => name = Some(field.text(number)?),
            2 => version = Some(field.text(number)?),
            4 => {
                field.varint(number)?;
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok((name, version))
}
