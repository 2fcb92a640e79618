//! Key names of the Redis tier and the Lua scripts that read and change them, so that every
//! change to an entry and to its purge indexes is one atomic, single-slot script call.
//!
//! Keys, with `P` the namespace prefix and `g` the group of a digest (see `Keys::group`);
//! `D` is the hex digest, `V` a variant id (hex hash of the `Vary` secondary key):
//! - `P{g}e:D` hash, variant id → encoded entry;
//! - `P{g}x:D` sorted set, variant id → expiry (Redis clock, ms); a variant past its
//!   expiry is dead even before Redis drops the keys;
//! - `P{g}t:D` set, the index memberships of the digest: `u` + URL index key, and
//!   `s` + V + surrogate index key per variant, so a removal leaves no index member behind
//!   and a purge can tell a current member from a stale one;
//! - `P{g}u:URL` set of digests stored under the URL;
//! - `P{g}s:KEY` set of `D` + `V`, the variants tagged with the surrogate key.
//!
//! Every key of a digest, and the index sets it is a member of, share the hash tag `{g}`,
//! so each script touches one Redis Cluster slot. Scripts derive the per-digest key names
//! from `ARGV` and set members rather than receiving all of them in `KEYS`; that is allowed
//! because they stay on the slot of the declared keys.

use std::sync::LazyLock;

use aws_lc_rs::digest::{digest, SHA256};
use redis::Script;

use crate::cache::store::Digest;
use crate::cache::vary::Vary;

/// Length of a variant id in hex characters (the scripts rely on it).
pub(super) const VARIANT_ID_LEN: usize = 32;
/// Length of a hex digest (the scripts rely on it).
pub(super) const DIGEST_HEX_LEN: usize = 64;

/// Functions shared by the scripts. `TIME` is Redis's clock: every instance then agrees on
/// expiry whatever its own clock says.
macro_rules! prelude {
    () => {
        r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Removes every variant of digest d, its index memberships and its keys.
local function drop_digest(base, d)
  local t = base .. 't:' .. d
  for _, m in ipairs(redis.call('SMEMBERS', t)) do
    if string.sub(m, 1, 1) == 'u' then
      redis.call('SREM', string.sub(m, 2), d)
    else
      redis.call('SREM', string.sub(m, 34), d .. string.sub(m, 2, 33))
    end
  end
  redis.call('DEL', base .. 'e:' .. d, base .. 'x:' .. d, t)
end

-- Removes variant v of digest d and its surrogate memberships; the digest once empty.
local function drop_variant(base, d, v)
  local t, x = base .. 't:' .. d, base .. 'x:' .. d
  local mark = 's' .. v
  for _, m in ipairs(redis.call('SMEMBERS', t)) do
    if string.sub(m, 1, 33) == mark then
      redis.call('SREM', string.sub(m, 34), d .. v)
      redis.call('SREM', t, m)
    end
  end
  redis.call('HDEL', base .. 'e:' .. d, v)
  redis.call('ZREM', x, v)
  if redis.call('ZCARD', x) == 0 then
    drop_digest(base, d)
  end
end
"
    };
}

/// KEYS: entry hash, expiry set. Returns the live variants' encoded entries (nil for a
/// variant whose body is missing, which a consistent keyspace never has).
pub(super) static GET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        prelude!(),
        r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now_ms(), '+inf')
if #ids == 0 then
  return {}
end
return redis.call('HMGET', KEYS[1], unpack(ids))
"
    ))
});

/// KEYS: entry hash, expiry set, memberships, URL index, surrogate indexes…
/// ARGV: base (`P{g}`), hex digest, variant id, encoded entry, ttl ms, most variants.
/// Drops expired variants, the variant replaced and, beyond the limit, those expiring
/// soonest; then stores the variant and its index memberships, and extends every key's
/// expiry to at least the entry's, so an index set never expires before its members.
pub(super) static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        prelude!(),
        r"
local base, d, v = ARGV[1], ARGV[2], ARGV[3]
local ttl, most = tonumber(ARGV[5]), tonumber(ARGV[6])
local now = now_ms()
for _, old in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  drop_variant(base, d, old)
end
drop_variant(base, d, v)
local count = redis.call('ZCARD', KEYS[2])
if count >= most then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[2], 0, count - most)) do
    drop_variant(base, d, old)
  end
end
redis.call('HSET', KEYS[1], v, ARGV[4])
redis.call('ZADD', KEYS[2], now + ttl, v)
redis.call('SADD', KEYS[3], 'u' .. KEYS[4])
redis.call('SADD', KEYS[4], d)
for i = 5, #KEYS do
  redis.call('SADD', KEYS[3], 's' .. v .. KEYS[i])
  redis.call('SADD', KEYS[i], d .. v)
end
for i = 1, #KEYS do
  if redis.call('PTTL', KEYS[i]) < ttl then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return 1
"
    ))
});

/// KEYS: one index set. ARGV: base, batch size, `u` (URL index) or `s` (surrogate index).
/// Takes up to a batch of members and removes what they stand for, if the membership is
/// still current. Returns `{live variants removed, members left}`.
pub(super) static PURGE_SET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        prelude!(),
        r"
local key, base = KEYS[1], ARGV[1]
local now = now_ms()
local removed = 0
for _, m in ipairs(redis.call('SPOP', key, tonumber(ARGV[2]))) do
  if ARGV[3] == 'u' then
    if redis.call('SISMEMBER', base .. 't:' .. m, 'u' .. key) == 1 then
      removed = removed + redis.call('ZCOUNT', base .. 'x:' .. m, '(' .. now, '+inf')
      drop_digest(base, m)
    end
  else
    local d, v = string.sub(m, 1, 64), string.sub(m, 65)
    if redis.call('SISMEMBER', base .. 't:' .. d, 's' .. v .. key) == 1 then
      local expiry = redis.call('ZSCORE', base .. 'x:' .. d, v)
      if expiry and tonumber(expiry) > now then
        removed = removed + 1
      end
      drop_variant(base, d, v)
    end
  end
end
return {removed, redis.call('SCARD', key)}
"
    ))
});

/// Which index a purge empties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IndexKind {
    Url,
    Surrogate,
}

/// Key names under one namespace prefix.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: Box<str>,
    groups: u16,
}

/// The names of one digest's keys.
#[derive(Debug)]
pub(super) struct EntryKeys {
    /// `P{g}`: what the scripts build further names from.
    pub(super) base: String,
    pub(super) hex: String,
    pub(super) entry: String,
    pub(super) expiry: String,
    pub(super) memberships: String,
}

impl IndexKind {
    pub(super) fn arg(self) -> &'static str {
        match self {
            IndexKind::Url => "u",
            IndexKind::Surrogate => "s",
        }
    }
}

impl Keys {
    pub(super) fn new(prefix: &str, groups: u16) -> Keys {
        debug_assert!(
            !prefix.contains(['{', '}']),
            "a prefix with braces would move the hash tag"
        );
        Keys {
            prefix: prefix.into(),
            groups: groups.max(1),
        }
    }

    pub(super) fn groups(&self) -> u16 {
        self.groups
    }

    /// The group of a digest. Digests are SHA-256, so their first bytes spread evenly.
    pub(super) fn group(&self, digest: &Digest) -> u16 {
        u16::from_be_bytes([digest[0], digest[1]]) % self.groups
    }

    /// `P{g}`
    pub(super) fn base(&self, group: u16) -> String {
        let mut base = String::with_capacity(self.prefix.len() + 8);
        base.push_str(&self.prefix);
        base.push('{');
        base.push_str(itoa::Buffer::new().format(group));
        base.push('}');
        base
    }

    pub(super) fn entry(&self, digest: &Digest) -> EntryKeys {
        let base = self.base(self.group(digest));
        let hex = hex(digest);
        debug_assert_eq!(
            hex.len(),
            DIGEST_HEX_LEN,
            "the scripts slice members by length"
        );
        let name = |kind: &str| {
            let mut name = String::with_capacity(base.len() + 2 + hex.len());
            name.push_str(&base);
            name.push_str(kind);
            name.push_str(&hex);
            name
        };
        EntryKeys {
            entry: name("e:"),
            expiry: name("x:"),
            memberships: name("t:"),
            hex,
            base,
        }
    }

    /// The URL index or surrogate index key named `name` in `base`'s group.
    pub(super) fn index(base: &str, kind: IndexKind, name: &str) -> String {
        let mut key = String::with_capacity(base.len() + 2 + name.len());
        key.push_str(base);
        key.push_str(match kind {
            IndexKind::Url => "u:",
            IndexKind::Surrogate => "s:",
        });
        key.push_str(name);
        key
    }

    /// SCAN pattern for the URL index keys of every group whose URL starts with
    /// `url_prefix`. Glob characters are escaped; the `*` that stands for the group can
    /// still match more than digits, so [`Keys::parse_url_key`] checks every key found.
    pub(super) fn url_pattern(&self, url_prefix: &str) -> String {
        let mut pattern = String::with_capacity(self.prefix.len() + url_prefix.len() + 16);
        push_glob_escaped(&mut pattern, &self.prefix);
        pattern.push_str("{*}u:");
        push_glob_escaped(&mut pattern, url_prefix);
        pattern.push('*');
        pattern
    }

    /// The group and URL of a URL index key of this namespace, or `None` for any other key.
    pub(super) fn parse_url_key<'k>(&self, key: &'k [u8]) -> Option<(u16, &'k [u8])> {
        let rest = key
            .strip_prefix(self.prefix.as_bytes())?
            .strip_prefix(b"{")?;
        let close = rest.iter().position(|&b| b == b'}')?;
        let (digits, rest) = rest.split_at(close);
        let url = rest.strip_prefix(b"}u:")?;
        if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let group = std::str::from_utf8(digits).ok()?.parse::<u16>().ok()?;
        (group < self.groups).then_some((group, url))
    }
}

/// The id of a variant: a hash of its secondary key, so that a newer response with the
/// same `Vary` values replaces the older one, and request values (cookies) do not appear
/// in key or field names.
pub(super) fn variant_id(vary: &Vary) -> String {
    let mut input = Vec::new();
    match vary {
        Vary::Absent => input.push(0),
        Vary::Any => input.push(1),
        Vary::Fields(fields) => {
            input.push(2);
            for field in fields {
                let name = field.name.as_str().as_bytes();
                input.extend_from_slice(&(name.len() as u64).to_be_bytes());
                input.extend_from_slice(name);
                match &field.value {
                    None => input.push(0),
                    Some(value) => {
                        input.push(1);
                        input.extend_from_slice(&(value.len() as u64).to_be_bytes());
                        input.extend_from_slice(value);
                    }
                }
            }
        }
    }
    let hash = digest(&SHA256, &input);
    hex(&hash.as_ref()[..VARIANT_ID_LEN / 2])
}

pub(super) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Escapes the characters Redis's glob matcher treats specially.
fn push_glob_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
}
