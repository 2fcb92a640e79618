//! Server-sent events read incrementally from a byte stream: each event's `event:` name and
//! its `data:` lines, as soon as its blank line has arrived (never the whole stream).

/// One event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub data: String,
}

/// Bytes received but not yet a whole event.
#[derive(Debug, Default)]
pub struct Reader {
    buf: Vec<u8>,
}

/// An event larger than this is an error (a provider's chunk is a few hundred bytes).
pub const MAX_EVENT: usize = 1 << 20;

impl Reader {
    /// Adds `bytes` and appends every event they complete to `out`; `Err` when an event
    /// grows past [`MAX_EVENT`].
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Event>) -> Result<(), String> {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(end) = blank_line(&self.buf[start..]) {
            let (block, skip) = end;
            if let Some(ev) = parse(&self.buf[start..start + block]) {
                out.push(ev);
            }
            start += block + skip;
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_EVENT {
            return Err(format!("an event of more than {MAX_EVENT} bytes"));
        }
        Ok(())
    }

    /// Whatever is left when the stream ends: an event without its blank line.
    pub fn finish(&mut self) -> Option<Event> {
        let rest = std::mem::take(&mut self.buf);
        parse(&rest)
    }
}

/// Where the first blank line is: the block's length and the separator's.
fn blank_line(b: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\n' {
            match b.get(i + 1) {
                Some(b'\n') => return Some((i, 2)),
                Some(b'\r') if b.get(i + 2) == Some(&b'\n') => return Some((i, 3)),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

fn parse(block: &[u8]) -> Option<Event> {
    let text = String::from_utf8_lossy(block);
    let mut ev = Event::default();
    let mut any = false;
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => ev.name = Some(value.to_owned()),
            "data" => {
                if any {
                    ev.data.push('\n');
                }
                ev.data.push_str(value);
                any = true;
            }
            _ => {}
        }
    }
    (any || ev.name.is_some()).then_some(ev)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_reads_come_out_whole_and_in_order() {
        let mut r = Reader::default();
        let mut out = Vec::new();
        r.feed(b"event: message_start\ndata: {\"a\"", &mut out)
            .unwrap_or(());
        assert!(out.is_empty());
        r.feed(
            b":1}\n\ndata: x\r\n\r\n: comment\n\ndata: [DONE]\n\n",
            &mut out,
        )
        .unwrap_or(());
        assert_eq!(out.len(), 2 + 1);
        assert_eq!(out[0].name.as_deref(), Some("message_start"));
        assert_eq!(out[0].data, "{\"a\":1}");
        assert_eq!(out[1].data, "x");
        assert_eq!(out[2].data, "[DONE]");
    }
}
