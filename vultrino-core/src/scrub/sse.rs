//! [`SseScrubber`]: scrubbing a `text/event-stream` at the level of the text the client joins.
//!
//! A byte-level scrubber cannot see a secret that an upstream echoes token by token: in
//! `data: {"choices":[{"delta":{"content":"sk-pr"}}]}` followed by `…"content":"oj-4f9"…` the
//! secret is never contiguous in the bytes, yet the client's SDK concatenates the deltas and shows
//! it whole. This scrubber parses the event framing, follows the JSON string fields that clients
//! join across events, and redacts a secret that forms in their joined text. The rules — what is
//! joined, what is held back, the bound and what happens past it — are in
//! docs/decisions/0069-sse-event-level-scrubbing.md.
//!
//! In short:
//!
//! - **Framing** as the WHATWG event-stream parser reads it: LF, CRLF and lone CR line ends, a
//!   leading BOM, comments, several `data:` lines joined with LF. Events leave in the order they
//!   came; an event nothing was redacted from leaves byte for byte as it came.
//! - **Channels**: the text a client joins. OpenAI `choices[].delta` text fields per choice
//!   `index` (and `tool_calls[].function.arguments` per call `index`), Anthropic
//!   `content_block_delta` `delta` text fields per block `index`, OpenAI Responses
//!   `response.….delta` events per type and item, and the generic rule: a string at the same
//!   JSON path in consecutive JSON events.
//! - **Indexes** are read as the clients read them (`1.0` is 1); one no client reads as a plain
//!   non-negative integer ends the stream ([`json_index`]).
//! - **Hold-back**: an event waits only while a channel's joined text ends with a proper prefix of
//!   a needle and that channel may still continue. Channels join until the stream ends (the
//!   SDKs append deltas sent after `finish_reason`, `content_block_stop`, `[DONE]`); those stop
//!   signals only end the holding ([`Channel::settle`]). When the join completes a needle, the first
//!   fragment of the occurrence gets one [`REDACTED`] marker and the rest of the occurrence is cut
//!   from the fragments (which may become empty strings). Such an event is re-serialized as one
//!   compact `data:` line.
//! - Every event then goes through a [`StreamScrubber`], so each encoded form is also removed
//!   from the raw bytes (other fields, non-JSON events, forms split across events' bytes).
//! - **JSON as clients read it**: what Python's `json.loads` or a JS client accepts and
//!   serde_json refuses (`NaN`, `Infinity`, `1e400`, lone surrogates, invalid UTF-8) is read
//!   leniently; data that starts like JSON but still cannot be read (nesting deeper than 128,
//!   malformed) ends the stream with an error (fail closed), except as an unterminated last
//!   event, which is dropped. An unterminated last event that can be read is joined like the
//!   others (some clients dispatch it). See docs/decisions/0066-sse-and-escapes-fail-closed.md.
//! - **Bound**: past [`SSE_HOLD_LIMIT`] bytes held (by default), `push` fails and the stream
//!   must end (fail closed).

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde_json::Value;

use super::stream::{StreamScrubber, Tail};
use super::{Scrubber, REDACTED};
use crate::error::{Code, Error, ErrorKind, Result};

/// Most bytes held back by default (partial event, held events, channel state): 2 MiB.
pub const SSE_HOLD_LIMIT: usize = 2 << 20;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// OpenAI `choices[].delta` text fields: joined per choice `index` and also per position in
/// `choices` (naive code joins `choices[0].delta.content`).
const OPENAI_TEXT_FIELDS: &[&str] = &["content", "refusal", "reasoning_content", "reasoning"];

/// Keys under `choices[].delta` whose strings are streamed text, held from their first
/// fragment on. Every other string there is joined too (openai-python's `accumulate_delta`
/// concatenates them all) but held only once its value has changed between two events: OpenAI
/// sends `role`, a tool call's `id` and `function.name` once, and holding them would make the
/// first event of a stream wait.
const OPENAI_STREAMED_KEYS: &[&str] = &[
    "content",
    "refusal",
    "reasoning_content",
    "reasoning",
    "arguments",
    "transcript",
];

/// Keys the generic rule never joins (besides any key ending in `_id` or `Id`): identifiers and
/// discriminators, repeated or switched between events but never concatenated by a client, and
/// OpenAI's `obfuscation` (random padding that changes in every event). Joining them would only
/// delay events.
const NOT_TEXT_KEYS: &[&str] = &[
    "obfuscation",
    "service_tier",
    "type",
    "object",
    "id",
    "model",
    "role",
    "event",
    "finish_reason",
    "stop_reason",
    "status",
    "system_fingerprint",
    // Google's camelCase names for the same things.
    "finishReason",
    "modelVersion",
];

/// Rough bookkeeping cost of one channel, counted against the hold limit.
const CHANNEL_OVERHEAD: usize = 128;

/// One step of a JSON path.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
enum Seg {
    Key(String),
    /// A list position or a list entry's `index` (a `u64`: no truncation on 32-bit targets).
    Index(u64),
}

/// Which joined text a string belongs to.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
enum ChannelKey {
    /// A string under `choices[].delta`, by choice `index` and path in `delta` (list entries
    /// by their own `index`, as `accumulate_delta` merges them).
    OpenAi {
        choice: u64,
        path: Vec<Seg>,
    },
    /// A text field of the choice at this position of `choices`, whatever its `index`.
    OpenAiPosition {
        position: usize,
        field: String,
    },
    Anthropic {
        block: u64,
        field: String,
    },
    /// OpenAI Responses API: `response.*.delta` events, per event type and output part.
    Responses {
        kind: String,
        item: String,
        output: u64,
        content: u64,
    },
    Generic(Vec<Seg>),
}

/// A stop signal in an event (`finish_reason`, `content_block_stop`, …). It does not end the
/// channels it names: the SDKs keep appending deltas that come after it (review L2), so they go
/// on joining until the stream ends, but they stop holding events (see [`Channel::settle`]).
enum Close {
    OpenAiChoice(u64),
    AnthropicBlock(u64),
    AnthropicAll,
    ResponsesItem(String),
    ResponsesAll,
}

/// A string found in an event, and where it goes.
struct Found {
    key: ChannelKey,
    path: Vec<Seg>,
    text: String,
}

/// A redaction in a channel's joined text (absolute byte offsets).
struct Redaction {
    range: Range<u64>,
    /// Its marker has been emitted.
    marked: bool,
}

/// The joined text of one channel, as far as it is still needed.
struct Channel {
    /// Bytes from offset `base` on: from the first position that may still start a needle.
    text: Vec<u8>,
    base: u64,
    /// Length of the whole joined text so far.
    len: u64,
    /// Sorted, merged, and only those that may still touch a fragment not yet emitted.
    redactions: Vec<Redaction>,
    /// Fragments ending at or before this may be emitted.
    emit_cut: u64,
    /// Hold events while the text's tail may become a needle. Always for the named rules; for
    /// the generic rule unless the value has been the same in every event so far (a repeated
    /// constant, such as an id, is not a text being streamed).
    hold: bool,
    /// Hash of the last fragment (generic rule: did the value change?).
    last: Option<u64>,
    /// Generic rule: the value has changed between two events at least once.
    varied: bool,
    /// Fragments of queued events that belong to this channel.
    refs: usize,
    /// No more text will come (the key maps to a new channel if it appears again).
    closed: bool,
    /// A stop signal named this channel: it still joins what comes, but holds nothing.
    settled: bool,
}

impl Channel {
    fn new(hold: bool) -> Channel {
        Channel {
            text: Vec::new(),
            base: 0,
            len: 0,
            redactions: Vec::new(),
            emit_cut: 0,
            hold,
            last: None,
            varied: false,
            refs: 0,
            closed: false,
            settled: false,
        }
    }

    /// Add a fragment to the joined text; returns its absolute range.
    fn append(&mut self, frag: &[u8], scrubber: &Scrubber, tail: &Tail) -> Range<u64> {
        let start = self.len;
        self.text.extend_from_slice(frag);
        self.len += frag.len() as u64;
        let undecided = tail.first_undecided(scrubber, &self.text);
        // A settled channel's events leave at once: what is complete now is redacted now (the
        // tail stays, so a later fragment that extends an occurrence extends its redaction).
        self.record(
            scrubber,
            if self.settled {
                self.text.len()
            } else {
                undecided
            },
        );
        self.text.drain(..undecided);
        self.base += undecided as u64;
        self.emit_cut = if self.hold && !self.settled {
            self.base
        } else {
            self.len
        };
        start..self.len
    }

    /// A stop signal for this channel: the stream says its text is complete, yet a client
    /// appends whatever deltas still come. The channel keeps its undecided tail and goes on
    /// joining (a secret completed after the signal is redacted in the later fragments), but
    /// its events no longer wait: holding them could only keep back a needle's proper prefix,
    /// which also leaves when a stream ends there, and would hold every later event of the
    /// stream until its end.
    fn settle(&mut self, scrubber: &Scrubber) {
        self.record(scrubber, self.text.len());
        self.settled = true;
        self.emit_cut = self.len;
    }

    /// No more text: everything is decided.
    fn close(&mut self, scrubber: &Scrubber) {
        self.record(scrubber, self.text.len());
        self.text.clear();
        self.base = self.len;
        self.emit_cut = self.len;
        self.closed = true;
    }

    /// Record the occurrences in `text` that start before `upto` (those are final: each start
    /// gets its longest needle, as in [`Scrubber::scrub`]).
    fn record(&mut self, scrubber: &Scrubber, upto: usize) {
        for m in scrubber.occurrences(&self.text, upto) {
            self.insert(self.base + m.start as u64..self.base + m.end as u64);
        }
    }

    /// Add a redaction, merging it with those it overlaps (adjacent ones stay apart).
    fn insert(&mut self, mut range: Range<u64>) {
        let mut marked = false;
        self.redactions.retain(|r| {
            let overlaps = r.range.start < range.end && range.start < r.range.end;
            if overlaps {
                range.start = range.start.min(r.range.start);
                range.end = range.end.max(r.range.end);
                marked |= r.marked;
            }
            !overlaps
        });
        let at = self
            .redactions
            .iter()
            .position(|r| r.range.start > range.start)
            .unwrap_or(self.redactions.len());
        self.redactions.insert(at, Redaction { range, marked });
    }

    /// The fragment ending at `end` has been emitted.
    fn emitted(&mut self, end: u64) {
        self.redactions.retain(|r| r.range.end > end);
        self.refs = self.refs.saturating_sub(1);
    }

    fn held_bytes(&self) -> usize {
        self.text.len() + self.redactions.len() * 24 + CHANNEL_OVERHEAD
    }
}

/// Where one string of an event sits in one of its channels.
struct Part {
    channel: u64,
    start: u64,
    end: u64,
}

/// The string `text` as the client must see it, or `None` when it is unchanged: each character
/// that a redaction of any of its channels covers is cut, and the first character of an
/// occurrence not yet emitted carries one [`REDACTED`] (normally the occurrence's own first
/// character). The first channel that covers a character decides the marker, so the same text
/// joined in two channels gets one marker per occurrence, not two. Works on whole characters,
/// so the result stays valid UTF-8.
fn redact(channels: &mut HashMap<u64, Channel>, parts: &[Part], text: &str) -> Option<String> {
    let touched = parts.iter().any(|p| {
        channels.get(&p.channel).is_some_and(|ch| {
            ch.redactions
                .iter()
                .any(|r| r.range.start < p.end && p.start < r.range.end)
        })
    });
    if !touched {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        let (mut covered, mut marker) = (false, false);
        for p in parts {
            let Some(ch) = channels.get_mut(&p.channel) else {
                continue;
            };
            let x = p.start + i as u64;
            let y = x + c.len_utf8() as u64;
            let mut here = false;
            for r in ch.redactions.iter_mut() {
                if r.range.start < y && x < r.range.end {
                    here = true;
                    if !r.marked {
                        marker |= !covered;
                        r.marked = true;
                    }
                }
            }
            covered |= here;
        }
        if marker {
            out.push_str(REDACTED);
        }
        if !covered {
            out.push(c);
        }
    }
    Some(out)
}

/// One line of an event: its bytes (terminator included) in the event's raw bytes.
struct Line {
    range: Range<usize>,
    /// Where its terminator starts (the end of the content).
    content_end: usize,
    data: bool,
}

/// A complete event as received.
struct RawEvent {
    raw: Bytes,
    /// Leading bytes that are no line's (a BOM; the LF of a CR LF whose CR came in the previous
    /// event).
    prefix: usize,
    lines: Vec<Line>,
    /// The `data` fields joined with LF, when there was any.
    data: Option<Vec<u8>>,
}

/// Splits the byte stream into events, as the WHATWG event-stream parser does.
#[derive(Default)]
struct Framer {
    buf: BytesMut,
    /// Scanning resumes here.
    pos: usize,
    line_start: usize,
    prefix: usize,
    lines: Vec<Line>,
    data: Vec<u8>,
    has_data: bool,
    /// The last line ended with a CR at the end of the input: an LF that follows belongs to it.
    skip_lf: bool,
    /// The BOM check at the start of the stream is done.
    started: bool,
}

impl Framer {
    fn next_events(&mut self, out: &mut Vec<RawEvent>, at_end: bool) {
        if !self.started {
            if !at_end && self.buf.len() < BOM.len() && BOM.starts_with(&self.buf) {
                return;
            }
            if self.buf.starts_with(BOM) {
                self.pos = BOM.len();
                self.line_start = BOM.len();
                self.prefix = BOM.len();
            }
            self.started = true;
        }
        loop {
            if self.skip_lf && self.pos < self.buf.len() {
                self.skip_lf = false;
                if self.buf.get(self.pos) == Some(&b'\n') {
                    self.pos += 1;
                    self.line_start = self.pos;
                    match self.lines.last_mut() {
                        Some(line) => line.range.end = self.pos,
                        None => self.prefix = self.pos,
                    }
                }
            }
            let Some(i) = self
                .buf
                .get(self.pos..)
                .and_then(|rest| rest.iter().position(|&b| b == b'\n' || b == b'\r'))
                .map(|i| self.pos + i)
            else {
                self.pos = self.buf.len();
                return;
            };
            let end = match (self.buf.get(i), self.buf.get(i + 1)) {
                (Some(b'\r'), Some(b'\n')) => i + 2,
                (Some(b'\r'), None) => {
                    self.skip_lf = true;
                    i + 1
                }
                _ => i + 1,
            };
            let blank = i == self.line_start;
            let data = self.field(self.line_start..i);
            self.lines.push(Line {
                range: self.line_start..end,
                content_end: i,
                data,
            });
            self.pos = end;
            self.line_start = end;
            if blank {
                out.push(RawEvent {
                    raw: self.buf.split_to(end).freeze(),
                    prefix: self.prefix,
                    lines: std::mem::take(&mut self.lines),
                    data: self.has_data.then(|| std::mem::take(&mut self.data)),
                });
                self.data.clear();
                self.has_data = false;
                self.pos = 0;
                self.line_start = 0;
                self.prefix = 0;
            }
        }
    }

    /// Read the field of the line whose content is `buf[content]`; true for a `data` line.
    fn field(&mut self, content: Range<usize>) -> bool {
        let content = self.buf.get(content).unwrap_or_default();
        if content.is_empty() || content.first() == Some(&b':') {
            return false;
        }
        let (name, value) = match content.iter().position(|&b| b == b':') {
            Some(c) => {
                let v = content.get(c + 1..).unwrap_or_default();
                (
                    content.get(..c).unwrap_or_default(),
                    v.strip_prefix(b" ").unwrap_or(v),
                )
            }
            None => (content, &[][..]),
        };
        if name != b"data" {
            return false;
        }
        if self.has_data {
            self.data.push(b'\n');
        }
        self.data.extend_from_slice(value);
        self.has_data = true;
        true
    }

    /// At the end of the stream (after [`next_events`](Framer::next_events) with `at_end`): the
    /// bytes of an event not yet complete, read as an event whose last line ends there. Clients
    /// that follow the spec discard it; those that dispatch what they have at the end of the
    /// stream (hand-written readers, some libraries) do not, so it is joined like any other
    /// (review #12).
    fn last_event(&mut self) -> Option<RawEvent> {
        if self.buf.is_empty() {
            return None;
        }
        let end = self.buf.len();
        if self.line_start < end {
            let data = self.field(self.line_start..end);
            self.lines.push(Line {
                range: self.line_start..end,
                content_end: end,
                data,
            });
        }
        let event = RawEvent {
            raw: self.buf.split().freeze(),
            prefix: self.prefix.min(end),
            lines: std::mem::take(&mut self.lines),
            data: self.has_data.then(|| std::mem::take(&mut self.data)),
        };
        self.data.clear();
        self.has_data = false;
        self.pos = 0;
        self.line_start = 0;
        self.prefix = 0;
        Some(event)
    }
}

/// A fragment of a queued event: where it sits in its channel and in the event's JSON.
struct Frag {
    channel: u64,
    range: Range<u64>,
    path: Vec<Seg>,
    text: String,
}

/// An event waiting to leave.
struct Pending {
    event: RawEvent,
    frags: Vec<Frag>,
}

impl Pending {
    /// Bytes it holds, counted against the limit.
    fn size(&self) -> usize {
        self.event.raw.len()
            + self.event.data.as_ref().map_or(0, Vec::len)
            + self
                .frags
                .iter()
                .map(|f| f.text.len() + std::mem::size_of::<Frag>())
                .sum::<usize>()
    }
}

/// Scrubs a `text/event-stream` body: the byte forms of every secret, and secrets that only form
/// in the text a client joins across events. Feed chunks with [`push`](SseScrubber::push) and end
/// with [`finish`](SseScrubber::finish); an `Err` from either means the stream must be cut off.
/// `Debug` shows no bytes.
pub struct SseScrubber {
    scrubber: Arc<Scrubber>,
    tail: Tail,
    bytes: StreamScrubber,
    limit: usize,
    framer: Framer,
    queue: VecDeque<Pending>,
    queued_bytes: usize,
    /// Open channels by key; closed ones are only in `channels` until their events have left.
    keys: HashMap<ChannelKey, u64>,
    channels: HashMap<u64, Channel>,
    next_channel: u64,
    scrubbed: bool,
    /// Why the stream had to end; every later call fails the same way.
    failed: Option<Failure>,
}

/// Why an [`SseScrubber`] refuses to go on (fail closed).
#[derive(Clone, Copy)]
enum Failure {
    /// More than the limit held back.
    TooMuchHeld,
    /// An event whose data a client may parse as JSON but the scrubber cannot read.
    Unreadable,
}

impl Failure {
    fn error(self) -> Error {
        match self {
            Failure::TooMuchHeld => too_much_held(),
            Failure::Unreadable => Error::new(
                ErrorKind::UpstreamFailed,
                "the upstream's event stream has an event whose JSON the scrubber cannot read",
            )
            .with_code(Code::UpstreamInvalid),
        }
    }
}

impl std::fmt::Debug for SseScrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseScrubber")
            .field("held_events", &self.queue.len())
            .field("held_bytes", &self.held_bytes())
            .field("scrubbed", &self.scrubbed())
            .finish_non_exhaustive()
    }
}

impl SseScrubber {
    /// An event-stream scrubber removing what `scrubber` removes, holding back at most
    /// [`SSE_HOLD_LIMIT`] bytes.
    pub fn new(scrubber: Arc<Scrubber>) -> Self {
        Self::with_limit(scrubber, SSE_HOLD_LIMIT)
    }

    /// The same with another bound on the bytes held back (an incomplete event counts).
    pub fn with_limit(scrubber: Arc<Scrubber>, limit: usize) -> Self {
        SseScrubber {
            tail: Tail::new(&scrubber),
            bytes: StreamScrubber::new(scrubber.clone()),
            scrubber,
            limit,
            framer: Framer::default(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            keys: HashMap::new(),
            channels: HashMap::new(),
            next_channel: 0,
            scrubbed: false,
            failed: None,
        }
    }

    /// Take the next chunk; returns the bytes that may now be sent (possibly empty). An `Err`
    /// means the stream must end here (more than the limit held back, or an event whose JSON
    /// cannot be read); later calls fail too.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Bytes> {
        self.check_failed()?;
        if self.tail.max_needle == 0 {
            return Ok(Bytes::copy_from_slice(chunk));
        }
        self.framer.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        self.framer.next_events(&mut events, false);
        for event in events {
            self.accept(event)?;
        }
        let out = self.release(false);
        if self.held_bytes() > self.limit {
            return Err(self.fail(Failure::TooMuchHeld));
        }
        Ok(out)
    }

    /// End of input: everything still held, scrubbed. An incomplete last event is joined as if
    /// it were complete (some clients dispatch it); if its JSON cannot be read, it is dropped
    /// (a client that could read it is one that dispatches it, and clients that follow the spec
    /// discard it anyway).
    pub fn finish(&mut self) -> Result<Bytes> {
        self.check_failed()?;
        if self.tail.max_needle == 0 {
            return Ok(Bytes::new());
        }
        let mut events = Vec::new();
        self.framer.next_events(&mut events, true);
        for event in events {
            self.accept(event)?;
        }
        if let Some(last) = self.framer.last_event() {
            match read_data(last.data.as_deref()) {
                Data::Unreadable => {}
                data => self.queue_event(last, data)?,
            }
        }
        for channel in self.channels.values_mut() {
            channel.close(&self.scrubber);
        }
        self.keys.clear();
        Ok(self.release(true))
    }

    /// True once anything has been redacted, at byte or event level.
    pub fn scrubbed(&self) -> bool {
        self.scrubbed || self.bytes.scrubbed()
    }

    /// Bytes held back right now: the incomplete event, the events waiting, channel state.
    pub fn held_bytes(&self) -> usize {
        self.framer.buf.len()
            + self.queued_bytes
            + self
                .channels
                .values()
                .map(Channel::held_bytes)
                .sum::<usize>()
            + self.bytes.held_len()
    }

    /// Events waiting for a later event to decide them.
    pub fn held_events(&self) -> usize {
        self.queue.len()
    }

    fn check_failed(&self) -> Result<()> {
        match self.failed {
            Some(f) => Err(f.error()),
            None => Ok(()),
        }
    }

    fn fail(&mut self, failure: Failure) -> Error {
        self.failed = Some(failure);
        failure.error()
    }

    /// Parse a complete event, feed its strings to their channels, queue it. An event whose
    /// data a client may read as JSON but the scrubber cannot ends the stream (fail closed): it
    /// could carry a piece of a secret that the events around it continue, and leaving it out of
    /// the join would let the client's joined text hold what the scrubber's does not.
    fn accept(&mut self, event: RawEvent) -> Result<()> {
        match read_data(event.data.as_deref()) {
            Data::Unreadable => Err(self.fail(Failure::Unreadable)),
            data => self.queue_event(event, data),
        }
    }

    fn queue_event(&mut self, event: RawEvent, data: Data) -> Result<()> {
        // An event without data, or with empty data, is not dispatched by a client; one whose
        // data is not JSON is byte-scrubbed only. Neither breaks a run of JSON events: joining
        // across them can only find more.
        let frags = match data {
            // The parsed value is not kept (it can take several times the event's size); the
            // rare event that must be rewritten is parsed again.
            Data::Json(value) => self.join(&value),
            Data::Text | Data::Unreadable => {
                // The SDKs stop at data that starts with `[DONE]` (no trimming), but a naive
                // joiner may go on: channels keep joining after it and only stop holding.
                let done = event
                    .data
                    .as_deref()
                    .is_some_and(|d| d.starts_with(b"[DONE]"));
                if done {
                    self.settle_where(|_| true);
                }
                Ok(Vec::new())
            }
        }
        .map_err(|()| self.fail(Failure::Unreadable))?;
        let pending = Pending { event, frags };
        self.queued_bytes += pending.size();
        self.queue.push_back(pending);
        Ok(())
    }

    /// Add the strings of one JSON event to their channels; returns where each one went.
    /// `Err` for an event with an `index` a client reads otherwise than the scrubber could
    /// (see [`json_index`]); nothing has been joined then.
    fn join(&mut self, value: &Value) -> std::result::Result<Vec<Frag>, ()> {
        let mut found = Vec::new();
        let mut closes = Vec::new();
        extract(value, &mut found, &mut closes)?;
        // The generic rule joins consecutive events only: a path this event lacks has ended.
        if self
            .keys
            .keys()
            .any(|k| matches!(k, ChannelKey::Generic(_)))
        {
            let present: HashSet<&ChannelKey> = found
                .iter()
                .map(|f| &f.key)
                .filter(|k| matches!(k, ChannelKey::Generic(_)))
                .collect();
            self.close_where(|k| matches!(k, ChannelKey::Generic(_)) && !present.contains(k));
        }
        let mut frags = Vec::with_capacity(found.len());
        for f in found {
            let id = self.channel_for(&f.key);
            let Some(ch) = self.channels.get_mut(&id) else {
                continue;
            };
            let generic = matches!(f.key, ChannelKey::Generic(_));
            if generic || !holds_from_the_start(&f.key) {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                f.text.hash(&mut h);
                let h = h.finish();
                // Held once the value has changed between two events (and, for the generic
                // rule, from the first value on, as a gap ends it anyway); a path whose value
                // has been the same in every event so far is a constant, not a text being
                // streamed, and holds nothing.
                ch.varied |= ch.last.is_some_and(|last| last != h);
                ch.hold = ch.varied || (generic && ch.last.is_none());
                ch.last = Some(h);
            }
            let range = ch.append(f.text.as_bytes(), &self.scrubber, &self.tail);
            ch.refs += 1;
            frags.push(Frag {
                channel: id,
                range,
                path: f.path,
                text: f.text,
            });
        }
        for close in closes {
            self.settle_where(|k| match (&close, k) {
                (Close::OpenAiChoice(c), ChannelKey::OpenAi { choice, .. }) => c == choice,
                (Close::AnthropicBlock(b), ChannelKey::Anthropic { block, .. }) => b == block,
                (Close::AnthropicAll, ChannelKey::Anthropic { .. })
                | (Close::ResponsesAll, ChannelKey::Responses { .. }) => true,
                (Close::ResponsesItem(i), ChannelKey::Responses { item, .. }) => i == item,
                _ => false,
            });
        }
        Ok(frags)
    }

    /// Settle every open channel whose key matches ([`Channel::settle`]).
    fn settle_where(&mut self, matches: impl Fn(&ChannelKey) -> bool) {
        for (key, id) in &self.keys {
            if matches(key) {
                if let Some(ch) = self.channels.get_mut(id) {
                    ch.settle(&self.scrubber);
                }
            }
        }
    }

    /// End every open channel whose key matches.
    fn close_where(&mut self, matches: impl Fn(&ChannelKey) -> bool) {
        let ended: Vec<ChannelKey> = self.keys.keys().filter(|k| matches(k)).cloned().collect();
        for key in ended {
            self.close(&key);
        }
    }

    fn channel_for(&mut self, key: &ChannelKey) -> u64 {
        if let Some(&id) = self.keys.get(key) {
            return id;
        }
        let id = self.next_channel;
        self.next_channel += 1;
        let hold = holds_from_the_start(key);
        self.keys.insert(key.clone(), id);
        self.channels.insert(id, Channel::new(hold));
        id
    }

    fn close(&mut self, key: &ChannelKey) {
        if let Some(id) = self.keys.remove(key) {
            if let Some(ch) = self.channels.get_mut(&id) {
                ch.close(&self.scrubber);
                if ch.refs == 0 {
                    self.channels.remove(&id);
                }
            }
        }
    }

    /// Send every event at the head of the queue whose fragments are all decided.
    fn release(&mut self, at_end: bool) -> Bytes {
        let mut ready = BytesMut::new();
        let mut single: Option<Bytes> = None;
        while let Some(front) = self.queue.front() {
            let decided = front.frags.iter().all(|f| {
                self.channels
                    .get(&f.channel)
                    .is_none_or(|ch| f.range.end <= ch.emit_cut)
            });
            if !decided && !at_end {
                break;
            }
            let Some(pending) = self.queue.pop_front() else {
                break;
            };
            self.queued_bytes = self.queued_bytes.saturating_sub(pending.size());
            let bytes = self.render(pending);
            // One ready event (the usual case) goes on without a copy.
            match (single.take(), ready.is_empty()) {
                (None, true) => single = Some(bytes),
                (Some(prev), _) => {
                    ready.extend_from_slice(&prev);
                    ready.extend_from_slice(&bytes);
                }
                (None, false) => ready.extend_from_slice(&bytes),
            }
        }
        let mut out = match single {
            Some(b) => self.bytes.push_bytes(b),
            None if ready.is_empty() => Bytes::new(),
            None => self.bytes.push_bytes(ready.freeze()),
        };
        if at_end {
            let tail = self.bytes.finish();
            if !tail.is_empty() {
                let mut all = BytesMut::from(&out[..]);
                all.extend_from_slice(&tail);
                out = all.freeze();
            }
        }
        out
    }

    /// The event's bytes as they must leave: as received, or with its redacted strings put back
    /// into its JSON, written as one `data:` line.
    fn render(&mut self, pending: Pending) -> Bytes {
        let Pending { event, frags } = pending;
        // The usual case: no redaction touches the event, which leaves as it came.
        let clean = frags.iter().all(|f| {
            self.channels.get(&f.channel).is_none_or(|ch| {
                !ch.redactions
                    .iter()
                    .any(|r| r.range.start < f.range.end && f.range.start < r.range.end)
            })
        });
        if clean {
            for f in frags {
                if let Some(ch) = self.channels.get_mut(&f.channel) {
                    ch.emitted(f.range.end);
                    if ch.closed && ch.refs == 0 {
                        self.channels.remove(&f.channel);
                    }
                }
            }
            return event.raw;
        }
        // A string may belong to several channels (an OpenAI text by choice `index` and by
        // position): its fragments are redacted together.
        let mut strings: Vec<(Vec<Seg>, String, Vec<Part>)> = Vec::new();
        for f in frags {
            let part = Part {
                channel: f.channel,
                start: f.range.start,
                end: f.range.end,
            };
            match strings.iter_mut().find(|(path, ..)| *path == f.path) {
                Some((.., parts)) => parts.push(part),
                None => strings.push((f.path, f.text, vec![part])),
            }
        }
        let mut edits = Vec::new();
        for (path, text, parts) in strings {
            if let Some(text) = redact(&mut self.channels, &parts, &text) {
                edits.push((path, text));
            }
            for part in parts {
                if let Some(ch) = self.channels.get_mut(&part.channel) {
                    ch.emitted(part.end);
                    if ch.closed && ch.refs == 0 {
                        self.channels.remove(&part.channel);
                    }
                }
            }
        }
        if edits.is_empty() {
            return event.raw;
        }
        self.scrubbed = true;
        // Parsing what parsed before and serializing a `Value` do not fail; were either to, the
        // event leaves with empty data rather than as received (fail closed).
        let data = event
            .data
            .as_deref()
            .and_then(json_value)
            .and_then(|mut value| {
                for (path, text) in edits {
                    *at_path(&mut value, &path)? = Value::String(text);
                }
                serde_json::to_vec(&value).ok()
            })
            .unwrap_or_default();
        let raw = &event.raw;
        let mut out = BytesMut::with_capacity(raw.len() + data.len());
        out.extend_from_slice(raw.get(..event.prefix).unwrap_or_default());
        let mut data_written = false;
        for line in &event.lines {
            if !line.data {
                out.extend_from_slice(raw.get(line.range.clone()).unwrap_or_default());
            } else if !data_written {
                data_written = true;
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&data);
                out.extend_from_slice(
                    raw.get(line.content_end..line.range.end)
                        .unwrap_or_default(),
                );
            }
        }
        out.freeze()
    }
}

/// What an event's data is to the scrubber.
enum Data {
    /// JSON, read as a client reads it.
    Json(Value),
    /// No data, or data that is not JSON (`[DONE]`, a plain-text heartbeat): never joined.
    Text,
    /// Data a client may parse as JSON (it starts like a JSON object, array or string) that
    /// the scrubber cannot read (nested deeper than serde_json's 128 levels, or not JSON).
    Unreadable,
}

fn read_data(data: Option<&[u8]>) -> Data {
    let Some(data) = data.filter(|d| !d.is_empty()) else {
        return Data::Text;
    };
    if let Some(value) = json_value(data) {
        return Data::Json(value);
    }
    let start = data.trim_ascii_start();
    // `[DONE]` ends OpenAI streams; the SDKs stop at it without parsing it.
    match start.first() {
        Some(b'{' | b'[' | b'"') if !start.starts_with(b"[DONE]") => Data::Unreadable,
        _ => Data::Text,
    }
}

/// The event's data as a client's JSON parser reads it: serde_json's reading, or, when it
/// refuses, the reading of [`lenient_json`].
fn json_value(data: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Value>(data).ok().or_else(|| {
        let lenient = lenient_json(data);
        serde_json::from_slice::<Value>(&lenient).ok()
    })
}

/// `data` rewritten so that serde_json reads what Python's `json.loads` (the OpenAI and
/// Anthropic SDKs) and JavaScript's `TextDecoder` + `JSON.parse` accept and serde_json refuses
/// (review #6), without changing where any string is or what text it holds for a client:
///
/// - invalid UTF-8 becomes U+FFFD, as `TextDecoder` (and `errors="replace"`) reads it;
/// - `NaN`, `Infinity`, `-Infinity` (Python) and numbers beyond `f64` (`1e400`: Python and JS
///   read infinity) become `null`;
/// - a lone surrogate escape (`\ud800`) becomes `\ufffd`: a character that, like the lone
///   surrogate for the client, is no part of any secret.
///
/// Nesting deeper than serde_json's limit stays unreadable ([`Data::Unreadable`]).
fn lenient_json(data: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(data);
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len() + 16);
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let rest = b.get(i..).unwrap_or_default();
        match c {
            b'"' => {
                out.push(b'"');
                i += 1;
                while let Some(&c) = b.get(i) {
                    let rest = b.get(i..).unwrap_or_default();
                    if c == b'\\' {
                        if let Some(unit) = u_escape(rest) {
                            let pair = (0xD800..0xDC00).contains(&unit)
                                && u_escape(rest.get(6..).unwrap_or_default())
                                    .is_some_and(|low| (0xDC00..0xE000).contains(&low));
                            if pair {
                                out.extend_from_slice(rest.get(..12).unwrap_or_default());
                                i += 12;
                            } else if (0xD800..0xE000).contains(&unit) {
                                out.extend_from_slice(b"\\ufffd");
                                i += 6;
                            } else {
                                out.extend_from_slice(rest.get(..6).unwrap_or_default());
                                i += 6;
                            }
                            continue;
                        }
                        out.extend_from_slice(rest.get(..2).unwrap_or(rest));
                        i += 2;
                        continue;
                    }
                    out.push(c);
                    i += 1;
                    if c == b'"' {
                        break;
                    }
                }
            }
            b'N' if rest.starts_with(b"NaN") => {
                out.extend_from_slice(b"null");
                i += 3;
            }
            b'I' if rest.starts_with(b"Infinity") => {
                out.extend_from_slice(b"null");
                i += 8;
            }
            b'-' if rest.starts_with(b"-Infinity") => {
                out.extend_from_slice(b"null");
                i += 9;
            }
            b'-' | b'0'..=b'9' => {
                let n = rest
                    .iter()
                    .position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                    .unwrap_or(rest.len());
                let number = rest.get(..n).unwrap_or_default();
                let finite = std::str::from_utf8(number)
                    .ok()
                    .and_then(|t| t.parse::<f64>().ok())
                    .is_some_and(f64::is_finite);
                out.extend_from_slice(if finite { number } else { b"null" });
                i += n.max(1);
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The UTF-16 unit of a `\uXXXX` escape at the start of `s`.
fn u_escape(s: &[u8]) -> Option<u32> {
    match s {
        [b'\\', b'u', h @ ..] if h.len() >= 4 => {
            let hex = std::str::from_utf8(h.get(..4)?).ok()?;
            u32::from_str_radix(hex, 16).ok()
        }
        _ => None,
    }
}

fn too_much_held() -> Error {
    Error::new(
        ErrorKind::UpstreamFailed,
        "the upstream's event stream held back more than the scrubbing limit allows",
    )
    .with_code(Code::UpstreamTooLarge)
}

fn at_path<'v>(value: &'v mut Value, path: &[Seg]) -> Option<&'v mut Value> {
    path.iter().try_fold(value, |v, seg| match seg {
        Seg::Key(k) => v.get_mut(k.as_str()),
        Seg::Index(i) => v.get_mut(usize::try_from(*i).ok()?),
    })
}

fn key(k: &str) -> Seg {
    Seg::Key(k.to_owned())
}

/// Largest `index` read: 2^53 - 1, the last integer a JS client (`Number`) tells from the next.
const MAX_INDEX: u64 = (1 << 53) - 1;

/// An `index` (choice, tool call, content block, output part) as the clients read it: a
/// non-negative integer, also when written as an integral number (`1.0`, `1e0`: serde_json
/// reads them as `f64`, while openai-node's `choices[index]`, Anthropic's `content.at(index)`
/// and a Python dict keyed by the index all read 1). `None` for anything else — negative,
/// fractional, beyond 2^53 - 1 (where JS rounds two integers to one), a string, `null` — which
/// some client still reads as some entry (`at(1.5)` is entry 1, `at(-1)` the last one, `"1"`
/// indexes a JS array), so the caller ends the stream (review L1, decision 0066).
fn json_index(v: &Value) -> Option<u64> {
    let i = match v.as_u64() {
        Some(i) => i,
        None => {
            let f = v.as_f64()?;
            if !f.is_finite() || f < 0.0 || f.fract() != 0.0 || f > MAX_INDEX as f64 {
                return None;
            }
            // Integral, in range: exact.
            f as u64
        }
    };
    (i <= MAX_INDEX).then_some(i)
}

/// The `index` of `obj`: `Ok(None)` when absent, `Err` when present but not readable as one
/// ([`json_index`]).
fn index_of(obj: &Value, name: &str) -> std::result::Result<Option<u64>, ()> {
    obj.get(name).map(|v| json_index(v).ok_or(())).transpose()
}

/// A list position as an index.
fn position(k: usize) -> u64 {
    u64::try_from(k).unwrap_or(u64::MAX)
}

/// The strings of one JSON event that clients join, and the stop signals it carries. `Err` for
/// an `index` present but not readable ([`json_index`]).
fn extract(
    value: &Value,
    found: &mut Vec<Found>,
    closes: &mut Vec<Close>,
) -> std::result::Result<(), ()> {
    if let Some(choices) = value.get("choices").and_then(Value::as_array) {
        for (k, c) in choices.iter().enumerate() {
            let choice = index_of(c, "index")?.unwrap_or(position(k));
            let mut at = vec![key("choices"), Seg::Index(position(k)), key("delta")];
            if let Some(delta) = c.get("delta") {
                openai_delta(delta, choice, k, &mut Vec::new(), &mut at, found)?;
            }
            if c.get("finish_reason").is_some_and(|f| !f.is_null()) {
                closes.push(Close::OpenAiChoice(choice));
            }
        }
    }
    let kind = value.get("type").and_then(Value::as_str);
    // Anthropic's JS `content.at(index)` reads a missing index as 0.
    let block = match kind {
        Some("content_block_delta" | "content_block_stop") => index_of(value, "index")?,
        _ => None,
    }
    .unwrap_or(0);
    match kind {
        Some("content_block_delta") => {
            if let Some(delta) = value.get("delta").and_then(Value::as_object) {
                for (field, v) in delta {
                    if let (Value::String(s), false) = (v, field == "type") {
                        found.push(Found {
                            key: ChannelKey::Anthropic {
                                block,
                                field: field.clone(),
                            },
                            path: vec![key("delta"), key(field)],
                            text: s.clone(),
                        });
                    }
                }
            }
        }
        Some("content_block_stop") => closes.push(Close::AnthropicBlock(block)),
        Some("message_stop") => closes.push(Close::AnthropicAll),
        Some(kind) if kind.starts_with("response.") => responses(kind, value, found, closes)?,
        _ => {}
    }
    let claimed: Vec<Vec<Seg>> = found.iter().map(|f| f.path.clone()).collect();
    let mut path = Vec::new();
    generic(value, &mut path, &claimed, found);
    Ok(())
}

/// Whether a new channel with this key holds events from its first fragment on.
fn holds_from_the_start(key: &ChannelKey) -> bool {
    match key {
        ChannelKey::Generic(_) => false,
        ChannelKey::OpenAi { path, .. } => match path.last() {
            Some(Seg::Key(k)) => OPENAI_STREAMED_KEYS.contains(&k.as_str()),
            _ => false,
        },
        _ => true,
    }
}

/// Every string under a choice's `delta`, as openai-python's `accumulate_delta` joins them:
/// by key, list entries by their `index` (by position without one), `index` and `type` never
/// joined. `rel` is the path in `delta` (entries by `index`), `at` the path in the event.
fn openai_delta(
    value: &Value,
    choice: u64,
    position: usize,
    rel: &mut Vec<Seg>,
    at: &mut Vec<Seg>,
    found: &mut Vec<Found>,
) -> std::result::Result<(), ()> {
    match value {
        Value::String(s) => {
            if let [Seg::Key(field)] = rel.as_slice() {
                if OPENAI_TEXT_FIELDS.contains(&field.as_str()) {
                    found.push(Found {
                        key: ChannelKey::OpenAiPosition {
                            position,
                            field: field.clone(),
                        },
                        path: at.clone(),
                        text: s.clone(),
                    });
                }
            }
            found.push(Found {
                key: ChannelKey::OpenAi {
                    choice,
                    path: rel.clone(),
                },
                path: at.clone(),
                text: s.clone(),
            });
        }
        Value::Object(map) => {
            for (k, v) in map {
                if k == "index" || k == "type" {
                    continue;
                }
                rel.push(key(k));
                at.push(key(k));
                openai_delta(v, choice, position, rel, at, found)?;
                rel.pop();
                at.pop();
            }
        }
        Value::Array(items) => {
            for (j, v) in items.iter().enumerate() {
                let index = index_of(v, "index")?;
                rel.push(Seg::Index(index.unwrap_or(self::position(j))));
                at.push(Seg::Index(self::position(j)));
                openai_delta(v, choice, position, rel, at, found)?;
                rel.pop();
                at.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

/// OpenAI Responses API events: the SDK joins the `delta` strings of a `response.….delta` event
/// type per item and content part; the matching `….done` event (or the response's end) settles
/// them ([`Channel::settle`]).
fn responses(
    kind: &str,
    value: &Value,
    found: &mut Vec<Found>,
    closes: &mut Vec<Close>,
) -> std::result::Result<(), ()> {
    let item = value
        .get("item_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind.ends_with(".delta") {
        if let Some(Value::String(s)) = value.get("delta") {
            let output = index_of(value, "output_index")?.unwrap_or(0);
            let content = index_of(value, "content_index")?.unwrap_or(0);
            found.push(Found {
                key: ChannelKey::Responses {
                    kind: kind.to_owned(),
                    item: item.to_owned(),
                    output,
                    content,
                },
                path: vec![key("delta")],
                text: s.clone(),
            });
        }
    } else if kind.ends_with(".done") && !item.is_empty() {
        closes.push(Close::ResponsesItem(item.to_owned()));
    } else if matches!(
        kind,
        "response.completed" | "response.failed" | "response.incomplete"
    ) {
        closes.push(Close::ResponsesAll);
    }
    Ok(())
}

/// A path step borrowed from the value while walking it (owned only for the strings found).
#[derive(Clone, Copy)]
enum SegRef<'v> {
    Key(&'v str),
    Index(usize),
}

impl SegRef<'_> {
    fn owned(self) -> Seg {
        match self {
            SegRef::Key(k) => Seg::Key(k.to_owned()),
            SegRef::Index(i) => Seg::Index(position(i)),
        }
    }

    fn is(self, seg: &Seg) -> bool {
        match (self, seg) {
            (SegRef::Key(a), Seg::Key(b)) => a == b,
            (SegRef::Index(a), Seg::Index(b)) => position(a) == *b,
            _ => false,
        }
    }
}

/// The generic rule: every string not claimed by a named rule, by its path.
fn generic<'v>(
    value: &'v Value,
    path: &mut Vec<SegRef<'v>>,
    claimed: &[Vec<Seg>],
    found: &mut Vec<Found>,
) {
    match value {
        Value::String(s) => {
            let text_key = match path.last() {
                Some(SegRef::Key(k)) => {
                    !NOT_TEXT_KEYS.contains(k) && !k.ends_with("_id") && !k.ends_with("Id")
                }
                _ => true,
            };
            let is_claimed = || {
                claimed
                    .iter()
                    .any(|c| c.len() == path.len() && path.iter().zip(c).all(|(a, b)| a.is(b)))
            };
            if text_key && !is_claimed() {
                let owned: Vec<Seg> = path.iter().map(|s| s.owned()).collect();
                found.push(Found {
                    key: ChannelKey::Generic(owned.clone()),
                    path: owned,
                    text: s.clone(),
                });
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                path.push(SegRef::Index(i));
                generic(v, path, claimed, found);
                path.pop();
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                path.push(SegRef::Key(k));
                generic(v, path, claimed, found);
                path.pop();
            }
        }
        _ => {}
    }
}
