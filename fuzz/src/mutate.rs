//! Mutations for the bounded run: byte-level edits every target gets, plus edits that keep
//! the input's structure where that is cheap (lines of text, fields of a protobuf message),
//! so most mutants get past the first decoding step and into the code behind it.
//!
//! Everything is driven by [`Rng`], seeded by the caller, so a run can be replayed exactly.

/// What an input is, which picks the structure-aware mutations it gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Opaque bytes (HTTP/2 frames, DER).
    Bytes,
    /// Line-oriented text (YAML, HTTP/1 heads, header values).
    Text,
    /// A protobuf message.
    Protobuf,
}

/// A small, fast, seedable generator (SplitMix64): reproducibility matters, not quality.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True with probability 1/`n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// One element of `items` (which must not be empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Values that tend to sit on boundaries: lengths, counts, signs.
const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    7,
    8,
    16,
    127,
    128,
    255,
    256,
    1023,
    1024,
    4095,
    4096,
    32767,
    32768,
    65535,
    65536,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    i64::MAX as u64,
    u64::MAX,
];

/// Produces mutants of corpus entries.
pub struct Mutator<'a> {
    shape: Shape,
    dictionary: &'a [&'a [u8]],
    max_len: usize,
}

impl<'a> Mutator<'a> {
    /// A mutator for inputs of `shape`, inserting `dictionary` tokens, keeping mutants at most
    /// `max_len` bytes long.
    pub fn new(shape: Shape, dictionary: &'a [&'a [u8]], max_len: usize) -> Self {
        Self {
            shape,
            dictionary,
            max_len,
        }
    }

    /// A mutant of `input`: one to eight stacked edits, `corpus` supplying splices.
    pub fn mutate(&self, rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
        let mut out = input.to_vec();
        let rounds = 1 + rng.below(8);
        for _ in 0..rounds {
            let structured = rng.below(3) != 0;
            match (self.shape, structured) {
                (Shape::Text, true) => mutate_lines(rng, &mut out, corpus, self.dictionary),
                (Shape::Protobuf, true) => {
                    if let Some(mutant) = mutate_protobuf(rng, &out, self.dictionary, 0) {
                        out = mutant;
                    } else {
                        mutate_bytes(rng, &mut out, corpus, self.dictionary);
                    }
                }
                _ => mutate_bytes(rng, &mut out, corpus, self.dictionary),
            }
            out.truncate(self.max_len);
        }
        out
    }
}

/// One byte-level edit of `data`.
pub fn mutate_bytes(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>], dictionary: &[&[u8]]) {
    let len = data.len();
    match rng.below(10) {
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = *rng.pick(&[0u8, 0xff, 0x7f, 0x80, b'0', b'9', b'\r', b'\n', b':', b' ']);
        }
        2 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            data.splice(at..at, bytes);
        }
        3 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            data.drain(at..at + n);
        }
        4 if len > 0 => {
            // Repeat a stretch: the classic way to grow counts and nesting.
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(256));
            let copy = data[at..at + n].to_vec();
            let to = rng.below(len + 1);
            data.splice(to..to, copy);
        }
        5 if len > 0 => {
            let value = *rng.pick(INTERESTING);
            let width = *rng.pick(&[1usize, 2, 4, 8]);
            let bytes = if rng.one_in(2) {
                value.to_le_bytes()
            } else {
                value.to_be_bytes()
            };
            let at = rng.below(len);
            for (i, b) in bytes[..width].iter().enumerate() {
                if let Some(slot) = data.get_mut(at + i) {
                    *slot = *b;
                }
            }
        }
        6 if !corpus.is_empty() => {
            let from = rng.below(corpus.len());
            splice(rng, data, from, corpus);
        }
        7 | 8 if !dictionary.is_empty() => {
            let token = *rng.pick(dictionary);
            let at = rng.below(len + 1);
            if rng.one_in(2) && len > 0 {
                let end = (at + token.len()).min(len);
                data.splice(at..end, token.iter().copied());
            } else {
                data.splice(at..at, token.iter().copied());
            }
        }
        _ => {
            // Digits nudged up or down: numbers in text are often the interesting part.
            if let Some(i) = (0..4)
                .map(|_| rng.below(len.max(1)))
                .find(|&i| data.get(i).is_some_and(u8::is_ascii_digit))
            {
                data[i] = if rng.one_in(2) { b'9' } else { b'0' };
            } else if len > 0 {
                let i = rng.below(len);
                data[i] = data[i].wrapping_add(1);
            }
        }
    }
}

/// Replaces a stretch of `data` with a stretch of `corpus[from]`.
fn splice(rng: &mut Rng, data: &mut Vec<u8>, from: usize, corpus: &[Vec<u8>]) {
    let other = &corpus[from];
    if other.is_empty() {
        return;
    }
    let start = rng.below(other.len());
    let n = 1 + rng.below(other.len() - start);
    let at = rng.below(data.len() + 1);
    let end = (at + rng.below(n + 1)).min(data.len());
    data.splice(at..end, other[start..start + n].iter().copied());
}

/// One line-level edit: lines deleted, repeated, swapped, re-indented, taken from another
/// entry, or a word replaced by a dictionary token.
fn mutate_lines(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>], dictionary: &[&[u8]]) {
    let mut lines: Vec<Vec<u8>> = data.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    let n = lines.len();
    match rng.below(6) {
        0 if n > 1 => {
            lines.remove(rng.below(n));
        }
        1 => {
            let line = lines[rng.below(n)].clone();
            lines.insert(rng.below(n + 1), line);
        }
        2 if n > 1 => lines.swap(rng.below(n), rng.below(n)),
        3 => {
            let i = rng.below(n);
            if rng.one_in(2) {
                let pad = vec![b' '; 1 + rng.below(4)];
                lines[i].splice(0..0, pad);
            } else {
                let strip = lines[i].iter().take_while(|&&b| b == b' ').count().min(2);
                lines[i].drain(..strip);
            }
        }
        4 if !corpus.is_empty() => {
            let other = &corpus[rng.below(corpus.len())];
            let theirs: Vec<&[u8]> = other.split(|&b| b == b'\n').collect();
            let line = theirs[rng.below(theirs.len())].to_vec();
            lines.insert(rng.below(n + 1), line);
        }
        _ if !dictionary.is_empty() => {
            let i = rng.below(n);
            let line = &mut lines[i];
            let words: Vec<usize> = (0..line.len())
                .filter(|&j| j == 0 || matches!(line[j - 1], b' ' | b':' | b'=' | b','))
                .collect();
            let start = if words.is_empty() {
                0
            } else {
                *rng.pick(&words)
            };
            let end = line[start..]
                .iter()
                .position(|&b| matches!(b, b' ' | b',' | b'\r'))
                .map_or(line.len(), |p| start + p);
            line.splice(start..end, rng.pick(dictionary).iter().copied());
        }
        _ => {}
    }
    *data = lines.join(&b'\n');
}

/// One protobuf field of a message, as found on the wire.
#[derive(Clone, Debug)]
enum Field {
    Varint(u64, u64),
    Fixed64(u64, [u8; 8]),
    Bytes(u64, Vec<u8>),
    Fixed32(u64, [u8; 4]),
}

/// The fields of `data` if it reads as a well-formed protobuf message.
fn parse_fields(mut data: &[u8]) -> Option<Vec<Field>> {
    let mut fields = Vec::new();
    while !data.is_empty() {
        let key = read_varint(&mut data)?;
        let number = key >> 3;
        if number == 0 {
            return None;
        }
        let field = match key & 7 {
            0 => Field::Varint(number, read_varint(&mut data)?),
            1 => Field::Fixed64(number, take(&mut data, 8)?.try_into().ok()?),
            2 => {
                let len = usize::try_from(read_varint(&mut data)?).ok()?;
                Field::Bytes(number, take(&mut data, len)?.to_vec())
            }
            5 => Field::Fixed32(number, take(&mut data, 4)?.try_into().ok()?),
            _ => return None,
        };
        fields.push(field);
    }
    Some(fields)
}

fn take<'d>(data: &mut &'d [u8], n: usize) -> Option<&'d [u8]> {
    if data.len() < n {
        return None;
    }
    let (head, rest) = data.split_at(n);
    *data = rest;
    Some(head)
}

fn read_varint(data: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let (&byte, rest) = data.split_first()?;
        *data = rest;
        value |= u64::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn encode_fields(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::new();
    for field in fields {
        match field {
            Field::Varint(n, v) => {
                write_varint(&mut out, n << 3);
                write_varint(&mut out, *v);
            }
            Field::Fixed64(n, b) => {
                write_varint(&mut out, (n << 3) | 1);
                out.extend_from_slice(b);
            }
            Field::Bytes(n, b) => {
                write_varint(&mut out, (n << 3) | 2);
                write_varint(&mut out, b.len() as u64);
                out.extend_from_slice(b);
            }
            Field::Fixed32(n, b) => {
                write_varint(&mut out, (n << 3) | 5);
                out.extend_from_slice(b);
            }
        }
    }
    out
}

/// One field-level edit of a protobuf message, lengths kept right: a field dropped,
/// repeated or moved, a number set to a boundary value, a nested message or string edited
/// in place. `None` when `data` is not a message.
fn mutate_protobuf(
    rng: &mut Rng,
    data: &[u8],
    dictionary: &[&[u8]],
    depth: usize,
) -> Option<Vec<u8>> {
    let mut fields = parse_fields(data)?;
    if fields.is_empty() {
        return None;
    }
    let i = rng.below(fields.len());
    match rng.below(6) {
        0 => {
            fields.remove(i);
        }
        1 => {
            let copy = fields[i].clone();
            fields.insert(rng.below(fields.len() + 1), copy);
        }
        2 => {
            let j = rng.below(fields.len());
            fields.swap(i, j);
        }
        _ => match &mut fields[i] {
            Field::Varint(_, v) => *v = *rng.pick(INTERESTING),
            Field::Fixed64(_, b) => *b = rng.pick(INTERESTING).to_le_bytes(),
            Field::Fixed32(_, b) => *b = (*rng.pick(INTERESTING) as u32).to_le_bytes(),
            Field::Bytes(_, inner) => {
                // Recurse into nested messages most of the time; edit the bytes otherwise
                // (strings, packed numbers, and messages at the bottom).
                let nested = (depth < 8 && rng.below(4) != 0)
                    .then(|| mutate_protobuf(rng, inner, dictionary, depth + 1))
                    .flatten();
                match nested {
                    Some(mutant) => *inner = mutant,
                    None => mutate_bytes(rng, inner, &[], dictionary),
                }
            }
        },
    }
    Some(encode_fields(&fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_mutants() {
        let corpus = vec![b"GET / HTTP/1.1\r\nhost: a\r\n\r\n".to_vec()];
        for shape in [Shape::Bytes, Shape::Text, Shape::Protobuf] {
            let m = Mutator::new(shape, &[b"chunked"], 1024);
            let run = |seed| {
                let mut rng = Rng::new(seed);
                (0..100)
                    .map(|_| m.mutate(&mut rng, &corpus[0], &corpus))
                    .collect::<Vec<_>>()
            };
            assert_eq!(run(7), run(7));
            assert_ne!(run(7), run(8));
        }
    }

    #[test]
    fn protobuf_edits_keep_messages_well_formed() {
        // A message with a varint, a string and a nested message holding a string.
        let nested = encode_fields(&[Field::Bytes(1, b"shop".to_vec())]);
        let message = encode_fields(&[
            Field::Varint(1, 150),
            Field::Bytes(2, b"reviews".to_vec()),
            Field::Bytes(3, nested),
        ]);
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            if let Some(mutant) = mutate_protobuf(&mut rng, &message, &[], 0) {
                assert!(parse_fields(&mutant).is_some(), "{mutant:?}");
            }
        }
    }

    #[test]
    fn mutants_respect_the_length_bound() {
        let corpus = vec![vec![b'a'; 100]];
        let m = Mutator::new(Shape::Text, &[b"0123456789"], 120);
        let mut rng = Rng::new(3);
        for _ in 0..1000 {
            assert!(m.mutate(&mut rng, &corpus[0], &corpus).len() <= 120);
        }
    }
}
