//! The three kinds of Nexmark event and their binary form (postcard): what
//! the `nexmark` connector writes as a record's value and guests read back,
//! borrowing its strings from the record.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A person registering with the auction site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person<'a> {
    /// Person id (from 1000).
    pub id: u64,
    /// `First Last`.
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// `local@domain.com`.
    #[serde(borrow)]
    pub email_address: Cow<'a, str>,
    /// Four groups of four digits.
    #[serde(borrow)]
    pub credit_card: Cow<'a, str>,
    /// One of ten US cities.
    #[serde(borrow)]
    pub city: Cow<'a, str>,
    /// One of six US states (independent of the city, as in Nexmark).
    #[serde(borrow)]
    pub state: Cow<'a, str>,
    /// Event time, ms since the epoch.
    pub date_time: i64,
    /// Padding to the average person size.
    #[serde(borrow)]
    pub extra: Cow<'a, str>,
}

/// An item put up for auction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auction<'a> {
    /// Auction id (from 1000).
    pub id: u64,
    /// Short item name.
    #[serde(borrow)]
    pub item_name: Cow<'a, str>,
    /// Longer description.
    #[serde(borrow)]
    pub description: Cow<'a, str>,
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
    #[serde(borrow)]
    pub extra: Cow<'a, str>,
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
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
    /// The channel's URL.
    #[serde(borrow)]
    pub url: Cow<'a, str>,
    /// Event time, ms since the epoch.
    pub date_time: i64,
    /// Padding to the average bid size.
    #[serde(borrow)]
    pub extra: Cow<'a, str>,
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
