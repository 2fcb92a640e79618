//! The HPACK decoder: a header block read field by field into a callback, the dynamic
//! table kept in step with the peer's encoder.

use super::table::{DynamicTable, STATIC};
use super::{huffman, read_integer, HpackError};

/// One decoded field. `never_indexed` is the peer's sensitive mark (RFC 7541 §7.1.3),
/// which a field forwarded on must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
    pub never_indexed: bool,
}

/// The decoder of one connection's header blocks.
#[derive(Debug)]
pub struct Decoder {
    table: DynamicTable,
    /// The table size the peer may use: our `SETTINGS_HEADER_TABLE_SIZE`.
    limit: usize,
    /// Huffman-decoded strings of the field being read.
    scratch: Vec<u8>,
}

/// Where a decoded string is.
#[derive(Clone, Copy)]
enum Text {
    Static(&'static str),
    Block(usize, usize),
    Scratch(usize, usize),
}

impl Decoder {
    /// A decoder whose peer may use a dynamic table of up to `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            table: DynamicTable::new(limit),
            limit,
            scratch: Vec::new(),
        }
    }

    /// Lets go of the scratch buffer's memory while the connection is idle.
    pub fn shrink(&mut self) {
        self.scratch = Vec::new();
    }

    /// The dynamic table's current size in bytes (RFC 7541 §4.1).
    pub fn table_size(&self) -> usize {
        self.table.size()
    }

    /// Decodes a whole header block, handing each field to `sink` in order. The block is
    /// always read to its end when it is well formed, whatever the fields are, so that the
    /// dynamic table stays in step with the peer's; an error leaves the decoder unusable
    /// (the connection ends with COMPRESSION_ERROR).
    pub fn decode(
        &mut self,
        block: &[u8],
        mut sink: impl FnMut(Field<'_>),
    ) -> Result<(), HpackError> {
        let mut at = 0;
        let mut fields_seen = false;
        while at < block.len() {
            let first = block[at];
            if first & 0x80 != 0 {
                // Indexed field (§6.1).
                let (index, used) = read_integer(&block[at..], 7)?;
                at += used;
                fields_seen = true;
                let (name, value) = self.indexed(index)?;
                sink(Field {
                    name,
                    value,
                    never_indexed: false,
                });
                continue;
            }
            if first & 0xe0 == 0x20 {
                // Dynamic table size update (§6.3).
                if fields_seen {
                    return Err(HpackError::LateSizeUpdate);
                }
                let (size, used) = read_integer(&block[at..], 5)?;
                at += used;
                if size > self.limit {
                    return Err(HpackError::TableSizeOverLimit(size, self.limit));
                }
                self.table.set_max(size);
                continue;
            }
            fields_seen = true;
            // Literal fields (§6.2): with incremental indexing (01), without (0000) or
            // never indexed (0001).
            let (prefix, index_it, never_indexed) = if first & 0xc0 == 0x40 {
                (6, true, false)
            } else {
                (4, false, first & 0x10 != 0)
            };
            let (name_index, used) = read_integer(&block[at..], prefix)?;
            at += used;
            self.scratch.clear();
            let name = if name_index == 0 {
                let (text, used) = self.string(&block[at..], at)?;
                at += used;
                text
            } else {
                self.name_of(name_index)?
            };
            let (value, used) = self.string(&block[at..], at)?;
            at += used;
            let name = resolve(block, &self.scratch, name);
            let value = resolve(block, &self.scratch, value);
            sink(Field {
                name,
                value,
                never_indexed,
            });
            if index_it {
                self.table.insert(name, value);
            }
        }
        Ok(())
    }

    /// The name of a static or dynamic entry; a dynamic one is copied to the scratch
    /// buffer, as the entry may be evicted by the field that names it.
    fn name_of(&mut self, index: usize) -> Result<Text, HpackError> {
        if index == 0 {
            return Err(HpackError::BadIndex(0));
        }
        if let Some((name, _)) = STATIC.get(index - 1) {
            return Ok(Text::Static(name));
        }
        let (name, _) = self
            .table
            .get(index - STATIC.len() - 1)
            .ok_or(HpackError::BadIndex(index))?;
        let start = self.scratch.len();
        self.scratch.extend_from_slice(name);
        Ok(Text::Scratch(start, self.scratch.len()))
    }

    fn indexed(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        if index == 0 {
            return Err(HpackError::BadIndex(0));
        }
        if let Some((name, value)) = STATIC.get(index - 1) {
            return Ok((name.as_bytes(), value.as_bytes()));
        }
        self.table
            .get(index - STATIC.len() - 1)
            .ok_or(HpackError::BadIndex(index))
    }

    /// Reads a string literal at the start of `src` (which sits at `offset` in the block).
    fn string(&mut self, src: &[u8], offset: usize) -> Result<(Text, usize), HpackError> {
        let first = *src.first().ok_or(HpackError::Truncated)?;
        let (len, used) = read_integer(src, 7)?;
        let end = used.checked_add(len).ok_or(HpackError::Truncated)?;
        let bytes = src.get(used..end).ok_or(HpackError::Truncated)?;
        if first & 0x80 == 0 {
            return Ok((Text::Block(offset + used, offset + end), end));
        }
        let start = self.scratch.len();
        huffman::decode(bytes, &mut self.scratch)?;
        Ok((Text::Scratch(start, self.scratch.len()), end))
    }
}

fn resolve<'a>(block: &'a [u8], scratch: &'a [u8], text: Text) -> &'a [u8] {
    match text {
        Text::Static(s) => s.as_bytes(),
        Text::Block(a, b) => &block[a..b],
        Text::Scratch(a, b) => &scratch[a..b],
    }
}
