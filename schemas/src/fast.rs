//! A hand-written reader of the one record on the hottest path: a `SaleEvent` datum as
//! the aggregator reads every one of them, into a [`SaleEventRef`] whose strings borrow
//! from the record.
//!
//! It reads only the layout of one writer schema, named by its fingerprint
//! ([`SALE_EVENT_LAYOUT`]), and only what is plainly valid there: minimal varints in
//! range, strings that fit and are UTF-8, a known enum symbol, no bytes after the datum.
//! Anything else — another writer schema, a truncated or odd datum — gives `None`, and
//! [`Codec::decode_sale`](crate::Codec::decode_sale) hands the message to the general
//! decoder, which reads it or says what is wrong with it. So the result is always the
//! general decoder's (a property test and the fuzz target compare them); this only makes
//! the common case cheaper.

use crate::records::{SaleEventRef, SaleKind};

/// The CRC-64-AVRO fingerprint of the `SaleEvent` schema whose layout [`sale_event_ref`]
/// reads (the current schema; a test keeps them equal). Field order and types, from its
/// Parsing Canonical Form: event_id, store_id, device_id, grid_id, sku (strings), kind
/// (enum SALE, RETURN, PREORDER), quantity (int), unit_price_minor (long), currency
/// (string), occurred_at, received_at (longs).
pub(crate) const SALE_EVENT_LAYOUT: [u8; 8] = [0x49, 0x4b, 0x14, 0xc9, 0xeb, 0x9b, 0xd2, 0xb1];

/// Reads a `SaleEvent` datum of the [`SALE_EVENT_LAYOUT`] writer schema, all of `datum`;
/// `None` when it is anything but plainly valid.
pub(crate) fn sale_event_ref(datum: &[u8]) -> Option<SaleEventRef<'_>> {
    let mut r = Reader(datum);
    let [event_id, store_id, device_id, grid_id, sku] = r.strings()?;
    let ev = SaleEventRef {
        event_id,
        store_id,
        device_id,
        grid_id,
        sku,
        kind: match r.long()? {
            0 => SaleKind::Sale,
            1 => SaleKind::Return,
            2 => SaleKind::Preorder,
            _ => return None,
        },
        quantity: r.int()?,
        unit_price_minor: r.long()?,
        currency: r.string()?,
        occurred_at: r.long()?,
        received_at: r.long()?,
    };
    r.0.is_empty().then_some(ev)
}

/// What is left of a datum.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// A zig-zag varint in its shortest form (at most 10 bytes, the last one not a bare
    /// continuation of zeros).
    #[inline]
    fn long(&mut self) -> Option<i64> {
        let (v, n) = varint(self.0)?;
        self.0 = &self.0[n..];
        Some(unzigzag(v))
    }

    /// An Avro `int`: a shortest-form varint of at most 5 bytes whose value fits 32 bits.
    #[inline]
    fn int(&mut self) -> Option<i32> {
        let (v, n) = varint(self.0)?;
        let v = i32::try_from(unzigzag(v)).ok().filter(|_| n <= 5)?;
        self.0 = &self.0[n..];
        Some(v)
    }

    /// `N` length-prefixed UTF-8 strings in a row, borrowed, checked as UTF-8 at once
    /// when every length after the first takes one byte: those bytes are ASCII, so no
    /// character can straddle two strings and the run is UTF-8 exactly when each string
    /// is (one pass instead of `N`, most of the cost for short strings).
    #[inline]
    fn strings<const N: usize>(&mut self) -> Option<[&'a str; N]> {
        let whole = self.0;
        let mut ends = [(0usize, 0usize); N];
        let mut one_byte_lengths = true;
        for (i, end) in ends.iter_mut().enumerate() {
            let before = self.0.len();
            let len = usize::try_from(self.long()?).ok()?;
            one_byte_lengths &= i == 0 || before - self.0.len() == 1;
            if len > self.0.len() {
                return None;
            }
            let start = whole.len() - self.0.len();
            *end = (start, start + len);
            self.0 = &self.0[len..];
        }
        let run_start = ends.first().map_or(0, |e| e.0);
        let run_end = whole.len() - self.0.len();
        if one_byte_lengths {
            let run = std::str::from_utf8(&whole[run_start..run_end]).ok()?;
            let mut out = [""; N];
            for (o, &(a, b)) in out.iter_mut().zip(&ends) {
                *o = run.get(a - run_start..b - run_start)?;
            }
            Some(out)
        } else {
            let mut out = [""; N];
            for (o, &(a, b)) in out.iter_mut().zip(&ends) {
                *o = std::str::from_utf8(&whole[a..b]).ok()?;
            }
            Some(out)
        }
    }

    /// A length-prefixed UTF-8 string, borrowed.
    #[inline]
    fn string(&mut self) -> Option<&'a str> {
        let len = usize::try_from(self.long()?).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        std::str::from_utf8(s).ok()
    }
}

/// The unsigned varint at the start of `b` and its length in bytes; `None` when it is
/// cut short, longer than 10 bytes, past 64 bits, or not in its shortest form.
#[inline]
fn varint(b: &[u8]) -> Option<(u64, usize)> {
    // One byte: values below 64 in magnitude, most lengths, kinds and quantities.
    match b.first() {
        Some(&x) if x < 0x80 => return Some((u64::from(x), 1)),
        None => return None,
        _ => {}
    }
    let mut v = 0u64;
    for (i, &x) in b.iter().enumerate().take(10) {
        v |= u64::from(x & 0x7f) << (7 * i);
        if x < 0x80 {
            // A last byte of 0 adds nothing (not the shortest form); the tenth byte holds
            // only bit 63.
            return (x != 0 && (i < 9 || x == 1)).then_some((v, i + 1));
        }
    }
    None
}

#[inline]
fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::AvroRecord;
    use crate::{Codec, DecodeError, SaleEvent};
    use proptest::prelude::*;

    fn zigzag_varint(v: i64) -> Vec<u8> {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            let b = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    #[test]
    fn the_layout_is_the_current_sale_event_schema() {
        // When this fails, SaleEvent.avsc changed: make `sale_event_ref` read the new
        // layout, then put the new fingerprint in SALE_EVENT_LAYOUT.
        assert_eq!(SaleEvent::schemas().current().fingerprint, SALE_EVENT_LAYOUT);
    }

    #[test]
    fn varints_are_read_in_their_shortest_form_only() {
        for v in [0, 1, -1, 63, -64, 64, -65, 1 << 20, i64::from(i32::MAX), i64::MIN, i64::MAX] {
            let b = zigzag_varint(v);
            assert_eq!(Reader(&b).long(), Some(v), "{v}");
        }
        assert_eq!(varint(&[0x80, 0x00]), None, "zero in two bytes");
        assert_eq!(varint(&[0xff, 0x80, 0x00]), None, "a trailing zero byte");
        assert_eq!(varint(&[0x80]), None, "cut short");
        assert_eq!(varint(&[0xff; 10]), None, "past 64 bits");
        assert_eq!(varint(&[0xff; 11]), None, "longer than 10 bytes");
        assert_eq!(varint(&[]), None);
        let mut max = vec![0xff; 9];
        max.push(0x01);
        assert_eq!(varint(&max), Some((u64::MAX, 10)));
        let big = zigzag_varint(i64::from(i32::MAX) + 1);
        assert_eq!(Reader(&big).int(), None, "an int past 32 bits");
        assert_eq!(Reader(&zigzag_varint(-5)).int(), Some(-5));
    }

    fn sale_event() -> impl Strategy<Value = SaleEvent> {
        let s = || "\\PC{0,12}";
        let long = || prop_oneof![any::<i64>(), -200i64..200];
        ((s(), s(), s(), s(), s()), (0..3u8, any::<i32>(), long(), s(), long(), long())).prop_map(
            |((e, st, d, g, sku), (k, q, p, c, o, r))| SaleEvent {
                event_id: e,
                store_id: st,
                device_id: d,
                grid_id: g,
                sku,
                kind: [SaleKind::Sale, SaleKind::Return, SaleKind::Preorder][usize::from(k)],
                quantity: q,
                unit_price_minor: p,
                currency: c,
                occurred_at: o,
                received_at: r,
            },
        )
    }

    fn general(bytes: &[u8]) -> Result<SaleEventRef<'_>, DecodeError> {
        Codec::single_object().decode_as::<SaleEvent, SaleEventRef<'_>>(bytes)
    }

    proptest! {
        #[test]
        fn the_fast_reader_reads_what_the_general_decoder_reads(ev in sale_event()) {
            let bytes = Codec::single_object().encode(&ev).expect("encodes");
            let fast = sale_event_ref(&bytes[10..]);
            prop_assert_eq!(fast, Some(SaleEventRef::from(&ev)));
            prop_assert_eq!(Codec::single_object().decode_sale(&bytes), general(&bytes));
        }

        /// Damaged messages (a byte changed, cut short, bytes added): the answer is the
        /// general decoder's, value or error.
        #[test]
        fn a_damaged_message_gets_the_general_decoders_answer(
            ev in sale_event(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            how in 0..3u8,
        ) {
            let mut bytes = Codec::single_object().encode(&ev).expect("encodes");
            let i = at.index(bytes.len());
            match how {
                0 => bytes[i] = byte,
                1 => bytes.truncate(i),
                _ => bytes.insert(i, byte),
            }
            prop_assert_eq!(Codec::single_object().decode_sale(&bytes), general(&bytes));
        }

        #[test]
        fn any_bytes_get_the_general_decoders_answer(
            datum in prop::collection::vec(any::<u8>(), 0..80),
        ) {
            let mut bytes = vec![0xC3, 0x01];
            bytes.extend_from_slice(&SALE_EVENT_LAYOUT);
            bytes.extend_from_slice(&datum);
            prop_assert_eq!(Codec::single_object().decode_sale(&bytes), general(&bytes));
        }
    }
}
