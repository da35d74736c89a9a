//! A small bencode reader (BitTorrent's encoding): enough to read tracker responses and
//! recognise DHT messages in captures.

/// A bencoded value borrowing from its input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List(Vec<Value<'a>>),
    /// Keys in the order they were written.
    Dict(Vec<(&'a [u8], Value<'a>)>),
}

impl<'a> Value<'a> {
    /// The value of `key` in a dictionary.
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        match self {
            Value::Dict(entries) => entries.iter().find(|(k, _)| *k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn bytes(&self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
}

const MAX_DEPTH: usize = 16;

/// Parses one value that fills `input` exactly.
pub fn parse_exact(input: &[u8]) -> Option<Value<'_>> {
    match parse(input, 0)? {
        (value, []) => Some(value),
        _ => None,
    }
}

/// Parses one value at the start of `input`; returns it and the rest.
pub fn parse_prefix(input: &[u8]) -> Option<(Value<'_>, &[u8])> {
    parse(input, 0)
}

fn parse(input: &[u8], depth: usize) -> Option<(Value<'_>, &[u8])> {
    if depth > MAX_DEPTH {
        return None;
    }
    match *input.first()? {
        b'i' => {
            let end = input.iter().position(|&b| b == b'e')?;
            let n = std::str::from_utf8(&input[1..end]).ok()?.parse().ok()?;
            Some((Value::Int(n), &input[end + 1..]))
        }
        b'l' => {
            let mut rest = &input[1..];
            let mut items = Vec::new();
            while *rest.first()? != b'e' {
                let (item, next) = parse(rest, depth + 1)?;
                items.push(item);
                rest = next;
            }
            Some((Value::List(items), &rest[1..]))
        }
        b'd' => {
            let mut rest = &input[1..];
            let mut entries = Vec::new();
            while *rest.first()? != b'e' {
                let (key, next) = parse(rest, depth + 1)?;
                let Value::Bytes(key) = key else { return None };
                let (value, next) = parse(next, depth + 1)?;
                entries.push((key, value));
                rest = next;
            }
            Some((Value::Dict(entries), &rest[1..]))
        }
        b'0'..=b'9' => {
            let colon = input.iter().position(|&b| b == b':')?;
            let len: usize = std::str::from_utf8(&input[..colon]).ok()?.parse().ok()?;
            let start = colon + 1;
            let bytes = input.get(start..start.checked_add(len)?)?;
            Some((Value::Bytes(bytes), &input[start + len..]))
        }
        _ => None,
    }
}

/// Writes a byte string.
pub fn bytes(out: &mut Vec<u8>, value: &[u8]) {
    out.extend_from_slice(format!("{}:", value.len()).as_bytes());
    out.extend_from_slice(value);
}

/// Writes an integer.
pub fn int(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(format!("i{value}e").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_dht_ping_and_rejects_junk() {
        let ping = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
        let value = parse_exact(ping).unwrap();
        assert_eq!(value.get(b"y").unwrap().bytes(), Some(&b"q"[..]));
        assert_eq!(value.get(b"q").unwrap().bytes(), Some(&b"ping"[..]));
        assert!(parse_exact(b"d1:ad2:id20:abce").is_none());
        assert!(parse_exact(b"i12").is_none());
        assert!(parse_exact(b"5:abc").is_none());
        assert!(parse_exact(b"le").is_some());
        assert!(parse_exact(b"lee").is_none());
    }
}
