//! The three kinds of Nexmark event and their binary form: what the
//! `nexmark` connector writes as a record's value and guests read back,
//! borrowing its strings from the record. Strings are ASCII text held as
//! bytes: reading one back costs no UTF-8 validation (a fifth of q0's time
//! in a guest when they were `str`), and queries write them out as bytes.
//!
//! The binary form is fixed-width, read where it lies: a tag byte (0
//! person, 1 auction, 2 bid), then the fields in declaration order, every
//! number as 8 bytes little-endian and every string as its length (4 bytes
//! little-endian) and its bytes. It replaced postcard (varints through
//! serde's visitors), whose decoding was about a tenth of a pass-through
//! query's time in a guest and its encoding a third of the source's.

use std::borrow::Cow;
use std::fmt;

/// A person registering with the auction site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Person<'a> {
    /// Person id (from 1000).
    pub id: u64,
    /// `First Last`.
    pub name: Cow<'a, [u8]>,
    /// `local@domain.com`.
    pub email_address: Cow<'a, [u8]>,
    /// Four groups of four digits.
    pub credit_card: Cow<'a, [u8]>,
    /// One of ten US cities.
    pub city: Cow<'a, [u8]>,
    /// One of six US states (independent of the city, as in Nexmark).
    pub state: Cow<'a, [u8]>,
    /// Event time, ms since the epoch.
    pub date_time: i64,
    /// Padding to the average person size.
    pub extra: Cow<'a, [u8]>,
}

/// An item put up for auction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Auction<'a> {
    /// Auction id (from 1000).
    pub id: u64,
    /// Short item name.
    pub item_name: Cow<'a, [u8]>,
    /// Longer description.
    pub description: Cow<'a, [u8]>,
    /// Opening price, cents.
    pub initial_bid: u64,
    /// Reserve price, cents.
    pub reserve: u64,
    /// Event time, ms since the epoch.
    pub date_time: i64,
    /// When the auction closes, ms since the epoch.
    pub expires: i64,
    /// The selling person's id.
    pub seller: u64,
    /// Category, 10 to 14.
    pub category: u64,
    /// Padding to the average auction size.
    pub extra: Cow<'a, [u8]>,
}

/// A bid on an auction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bid<'a> {
    /// The auction's id.
    pub auction: u64,
    /// The bidding person's id.
    pub bidder: u64,
    /// Price, cents.
    pub price: u64,
    /// Where the bid came from: `Google`, `Facebook`, `Baidu`, `Apple` or
    /// `channel-N`.
    pub channel: Cow<'a, [u8]>,
    /// The channel's URL.
    pub url: Cow<'a, [u8]>,
    /// Event time, ms since the epoch.
    pub date_time: i64,
    /// Padding to the average bid size.
    pub extra: Cow<'a, [u8]>,
}

/// One Nexmark event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A new person.
    Person(Person<'a>),
    /// A new auction.
    Auction(Auction<'a>),
    /// A bid.
    Bid(Bid<'a>),
}

/// A record's value is not an encoded event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(&'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a Nexmark event: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

const PERSON: u8 = 0;
const AUCTION: u8 = 1;
const BID: u8 = 2;

/// Appends the binary form's pieces.
struct Writer<'v>(&'v mut Vec<u8>);

impl Writer<'_> {
    fn u64(&mut self, n: u64) -> &mut Self {
        self.0.extend_from_slice(&n.to_le_bytes());
        self
    }

    fn i64(&mut self, n: i64) -> &mut Self {
        self.0.extend_from_slice(&n.to_le_bytes());
        self
    }

    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        // Events are generated: none has a field of 4 GiB.
        let len = u32::try_from(b.len()).expect("invariant: an event's field is under 4 GiB");
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(b);
        self
    }
}

/// Reads the binary form's pieces, each checked against what is left.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("it ends inside a field"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn eight(&mut self) -> Result<[u8; 8], DecodeError> {
        let b = self.take(8)?;
        Ok([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.eight().map(u64::from_le_bytes)
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        self.eight().map(i64::from_le_bytes)
    }

    fn bytes(&mut self) -> Result<Cow<'a, [u8]>, DecodeError> {
        let len = self.take(4)?;
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]);
        let len = usize::try_from(len).map_err(|_| DecodeError("a field is too long"))?;
        self.take(len).map(Cow::Borrowed)
    }
}

impl<'a> Event<'a> {
    /// Whether `bytes` are a bid's binary form, from its first byte alone:
    /// a query that wants only persons and auctions skips the bids (nine
    /// events in ten) without decoding them, and so without noticing a
    /// malformed one.
    pub fn is_bid(bytes: &[u8]) -> bool {
        bytes.first() == Some(&BID)
    }

    /// Appends the event's binary form to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut w = Writer(out);
        match self {
            Event::Person(p) => {
                w.0.push(PERSON);
                w.u64(p.id)
                    .bytes(&p.name)
                    .bytes(&p.email_address)
                    .bytes(&p.credit_card)
                    .bytes(&p.city)
                    .bytes(&p.state)
                    .i64(p.date_time)
                    .bytes(&p.extra);
            }
            Event::Auction(a) => {
                w.0.push(AUCTION);
                w.u64(a.id)
                    .bytes(&a.item_name)
                    .bytes(&a.description)
                    .u64(a.initial_bid)
                    .u64(a.reserve)
                    .i64(a.date_time)
                    .i64(a.expires)
                    .u64(a.seller)
                    .u64(a.category)
                    .bytes(&a.extra);
            }
            Event::Bid(b) => {
                w.0.push(BID);
                w.u64(b.auction)
                    .u64(b.bidder)
                    .u64(b.price)
                    .bytes(&b.channel)
                    .bytes(&b.url)
                    .i64(b.date_time)
                    .bytes(&b.extra);
            }
        }
    }

    /// The event's binary form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Reads an event, borrowing its strings from `bytes`; refuses bytes
    /// that are not exactly one event.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let (&tag, rest) = bytes.split_first().ok_or(DecodeError("it is empty"))?;
        let mut r = Reader(rest);
        let event = match tag {
            PERSON => Event::Person(Person {
                id: r.u64()?,
                name: r.bytes()?,
                email_address: r.bytes()?,
                credit_card: r.bytes()?,
                city: r.bytes()?,
                state: r.bytes()?,
                date_time: r.i64()?,
                extra: r.bytes()?,
            }),
            AUCTION => Event::Auction(Auction {
                id: r.u64()?,
                item_name: r.bytes()?,
                description: r.bytes()?,
                initial_bid: r.u64()?,
                reserve: r.u64()?,
                date_time: r.i64()?,
                expires: r.i64()?,
                seller: r.u64()?,
                category: r.u64()?,
                extra: r.bytes()?,
            }),
            BID => Event::Bid(Bid {
                auction: r.u64()?,
                bidder: r.u64()?,
                price: r.u64()?,
                channel: r.bytes()?,
                url: r.bytes()?,
                date_time: r.i64()?,
                extra: r.bytes()?,
            }),
            _ => return Err(DecodeError("its kind is not person, auction or bid")),
        };
        if !r.0.is_empty() {
            return Err(DecodeError("bytes follow the event"));
        }
        Ok(event)
    }

    /// Event time, ms since the epoch.
    pub fn date_time(&self) -> i64 {
        match self {
            Event::Person(p) => p.date_time,
            Event::Auction(a) => a.date_time,
            Event::Bid(b) => b.date_time,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Generator, GeneratorConfig};

    #[test]
    fn every_kind_of_event_decodes_to_itself_and_anything_else_is_refused() {
        let g = Generator::new(GeneratorConfig::default());
        // The first 50 events hold all three kinds.
        let events: Vec<Event<'static>> = (0..50).map(|i| g.event(i)).collect();
        for kind in [PERSON, AUCTION, BID] {
            let e = events
                .iter()
                .find(|e| e.encode()[0] == kind)
                .expect("the stream has every kind");
            let bytes = e.encode();
            assert_eq!(Event::decode(&bytes).as_ref(), Ok(e));
            // Cut anywhere: refused, never a panic.
            for len in 0..bytes.len() {
                assert!(
                    Event::decode(&bytes[..len]).is_err(),
                    "kind {kind}, {len} bytes"
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(
                Event::decode(&longer),
                Err(DecodeError("bytes follow the event"))
            );
            let mut other = bytes.clone();
            other[0] = 3;
            assert_eq!(
                Event::decode(&other).map_err(|e| e.to_string()),
                Err("not a Nexmark event: its kind is not person, auction or bid".into())
            );
        }
        // A string's length past the end.
        let mut bid = events
            .iter()
            .find(|e| matches!(e, Event::Bid(_)))
            .expect("a bid")
            .encode();
        bid[25..29].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            Event::decode(&bid),
            Err(DecodeError("it ends inside a field"))
        );
    }
}
