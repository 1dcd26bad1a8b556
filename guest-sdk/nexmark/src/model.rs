//! The three kinds of Nexmark event and their binary form (postcard): what
//! the `nexmark` connector writes as a record's value and guests read back,
//! borrowing its strings from the record. Strings are ASCII text held as
//! bytes: reading one back costs no UTF-8 validation (a fifth of q0's time
//! in a guest when they were `str`), and queries write them out as bytes.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A person registering with the auction site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person<'a> {
    /// Person id (from 1000).
    pub id: u64,
    /// `First Last`.
    #[serde(borrow, with = "serde_bytes")]
    pub name: Cow<'a, [u8]>,
    /// `local@domain.com`.
    #[serde(borrow, with = "serde_bytes")]
    pub email_address: Cow<'a, [u8]>,
    /// Four groups of four digits.
    #[serde(borrow, with = "serde_bytes")]
    pub credit_card: Cow<'a, [u8]>,
    /// One of ten US cities.
    #[serde(borrow, with = "serde_bytes")]
    pub city: Cow<'a, [u8]>,
    /// One of six US states (independent of the city, as in Nexmark).
    #[serde(borrow, with = "serde_bytes")]
    pub state: Cow<'a, [u8]>,
    /// Event time, ms since the epoch.
    pub date_time: i64,
    /// Padding to the average person size.
    #[serde(borrow, with = "serde_bytes")]
    pub extra: Cow<'a, [u8]>,
}

/// An item put up for auction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auction<'a> {
    /// Auction id (from 1000).
    pub id: u64,
    /// Short item name.
    #[serde(borrow, with = "serde_bytes")]
    pub item_name: Cow<'a, [u8]>,
    /// Longer description.
    #[serde(borrow, with = "serde_bytes")]
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
    #[serde(borrow, with = "serde_bytes")]
    pub extra: Cow<'a, [u8]>,
}

/// A bid on an auction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bid<'a> {
    /// The auction's id.
    pub auction: u64,
    /// The bidding person's id.
    pub bidder: u64,
    /// Price, cents.
    pub price: u64,
    /// Where the bid came from: `Google`, `Facebook`, `Baidu`, `Apple` or
    /// `channel-N`.
    #[serde(borrow, with = "serde_bytes")]
    pub channel: Cow<'a, [u8]>,
    /// The channel's URL.
    #[serde(borrow, with = "serde_bytes")]
    pub url: Cow<'a, [u8]>,
    /// Event time, ms since the epoch.
    pub date_time: i64,
    /// Padding to the average bid size.
    #[serde(borrow, with = "serde_bytes")]
    pub extra: Cow<'a, [u8]>,
}

/// One Nexmark event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event<'a> {
    /// A new person.
    #[serde(borrow)]
    Person(Person<'a>),
    /// A new auction.
    #[serde(borrow)]
    Auction(Auction<'a>),
    /// A bid.
    #[serde(borrow)]
    Bid(Bid<'a>),
}

/// A record's value is not an encoded event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(postcard::Error);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a Nexmark event: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

impl<'a> Event<'a> {
    /// Appends the event's binary form to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let buf = std::mem::take(out);
        *out = postcard::to_extend(self, buf).expect("invariant: a Vec grows as needed");
    }

    /// Writes the event's binary form at the start of `buf` (faster than
    /// growing a vector); its length, or `None` if `buf` is too short.
    pub fn encode_to(&self, buf: &mut [u8]) -> Option<usize> {
        postcard::to_slice(self, buf).ok().map(|used| used.len())
    }

    /// The event's binary form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Reads an event, borrowing its strings from `bytes`.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        postcard::from_bytes(bytes).map_err(DecodeError)
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
