//! Event `i` of the stream, computed from `i` alone.

use std::borrow::Cow;
use std::sync::OnceLock;

use crate::model::{Auction, Bid, Event, Person};
use crate::random::SplitMix64;

/// Persons, auctions and bids per cycle of 50 events.
const PERSON_PROPORTION: u64 = 1;
const AUCTION_PROPORTION: u64 = 3;
const TOTAL_PROPORTION: u64 = 50;
const FIRST_PERSON_ID: u64 = 1000;
const FIRST_AUCTION_ID: u64 = 1000;
const FIRST_CATEGORY_ID: u64 = 10;
const NUM_CATEGORIES: u32 = 5;
/// Random ids may run this far ahead of the last person or auction created.
const PERSON_ID_LEAD: i64 = 10;
const AUCTION_ID_LEAD: i64 = 10;
/// Hot ids are the first (or second) of the current batch of this many.
const HOT_BATCH: i64 = 100;
/// One in this many bids goes to a cold auction; the rest to the hot one.
const HOT_AUCTION_RATIO: u32 = 2;
const HOT_SELLER_RATIO: u32 = 4;
const HOT_BIDDER_RATIO: u32 = 4;
const NUM_ACTIVE_PEOPLE: i64 = 1000;
const NUM_IN_FLIGHT_AUCTIONS: i64 = 100;
const AVG_PERSON_BYTES: usize = 200;
const AVG_AUCTION_BYTES: usize = 500;
const AVG_BID_BYTES: usize = 100;
const CHANNELS: usize = 10_000;
/// Padding is cut from one text of this many characters.
const PADDING_TEXT: usize = 1 << 20;

const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
const CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];

/// Seeds of the fixed tables (event streams are seeded with event ids).
const PADDING_SEED: u64 = 0x5EED_0000_0000_0001;
const URL_SEED: u64 = 0x5EED_0000_0000_0002;

/// What to generate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GeneratorConfig {
    /// Events in the whole stream.
    pub events: u64,
    /// Events per second of event time (Nexmark's TPS): event `i` happens
    /// `i / tps` seconds after `base_time`. Generation itself is not paced.
    pub tps: u64,
    /// Event time of the first event, ms since the epoch.
    pub base_time: i64,
}

impl Default for GeneratorConfig {
    /// Nexmark's benchmark rate (10 M events per second of event time),
    /// from 2026-01-01T00:00:00Z.
    fn default() -> Self {
        GeneratorConfig {
            events: 0,
            tps: 10_000_000,
            base_time: 1_767_225_600_000,
        }
    }
}

/// The Nexmark stream: event `i` is a person when `i % 50 == 0`, an
/// auction when it is 1 to 3, a bid otherwise; its fields come from a
/// SplitMix64 stream seeded with `i`, drawn in the reference generator's
/// order. Two differences from the reference: the stream starts at event
/// id 0 (so person 1000 and auction 1000, the first hot ones, exist), and a
/// bid's bidder is a person id (the reference adds the id offset twice).
#[derive(Clone, Debug)]
pub struct Generator {
    config: GeneratorConfig,
    /// Microseconds of event time between two events.
    delay_us: f64,
}

/// The padding text and the channels' names and URLs, the same in every
/// process.
struct Tables {
    padding: String,
    hot_urls: [String; 4],
    channel_names: Vec<String>,
    channel_urls: Vec<String>,
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let padding = packed_letters(&mut SplitMix64::new(PADDING_SEED), PADDING_TEXT);
        let mut rng = SplitMix64::new(URL_SEED);
        let hot_urls = std::array::from_fn(|_| base_url(&mut rng));
        let channel_urls = (0..CHANNELS as u32)
            .map(|i| {
                let mut url = base_url(&mut rng);
                if rng.below(10) > 0 {
                    url.push_str("&channel_id=");
                    url.push_str(&(i.reverse_bits() as i32).wrapping_abs().to_string());
                }
                url
            })
            .collect();
        Tables {
            padding,
            hot_urls,
            channel_names: (0..CHANNELS).map(|i| format!("channel-{i}")).collect(),
            channel_urls,
        }
    })
}

fn base_url(rng: &mut SplitMix64) -> String {
    format!(
        "https://www.nexmark.com/{}/{}/{}/item.htm?query=1",
        random_string(rng, 5, '_'),
        random_string(rng, 5, '_'),
        random_string(rng, 5, '_')
    )
}

/// `len` characters, six per 32-bit draw, as the reference packs them
/// (its signed remainders put them in `H`..`z`).
fn packed_letters(rng: &mut SplitMix64, len: usize) -> String {
    let mut s = String::with_capacity(len);
    let (mut rnd, mut left) = (0i32, 0);
    for _ in 0..len {
        if left == 0 {
            rnd = rng.next_i32();
            left = 6;
        }
        s.push(char::from((i32::from(b'a') + rnd % 26) as u8));
        rnd /= 26;
        left -= 1;
    }
    s
}

/// 3 to `max_len - 1` characters: lowercase letters, one in 13 `special`;
/// spaces at either end trimmed, as the reference does.
fn random_string(rng: &mut SplitMix64, max_len: u32, special: char) -> String {
    let len = 3 + rng.below(max_len - 3);
    let mut s = String::with_capacity(len as usize);
    for _ in 0..len {
        if rng.below(13) == 0 {
            s.push(special);
        } else {
            s.push(char::from(b'a' + rng.below(26) as u8));
        }
    }
    let trimmed = s.trim_matches(' ');
    if trimmed.len() == s.len() {
        s
    } else {
        trimmed.to_owned()
    }
}

/// Padding that brings an event of `current` bytes to about `average`:
/// uniform within 20 % of the difference.
fn padding(rng: &mut SplitMix64, current: usize, average: usize) -> &'static str {
    if current > average {
        return "";
    }
    let d = (average - current) as u32;
    // round(d × 0.2), the reference's formula, in integers: a fifth of an
    // integer is never within rounding error of one half.
    let delta = (d + 2) / 5;
    let len = (d - delta + if delta == 0 { 0 } else { rng.below(2 * delta) }) as usize;
    let text = &tables().padding;
    let start = rng.below((PADDING_TEXT - len) as u32) as usize;
    &text[start..start + len]
}

/// Log-uniform from $1 to $1 000 000, in cents.
fn price(rng: &mut SplitMix64) -> u64 {
    round_positive(10f64.powf(rng.next_f64() * 6.0) * 100.0)
}

/// `x.round()` for `0 <= x < 2^63` without calling libm, which is what
/// `round` does on x86-64 before SSE 4.1 (`x - t` is exact for such `x`).
fn round_positive(x: f64) -> u64 {
    let t = x as u64;
    t + u64::from(x - t as f64 >= 0.5)
}

fn last_base0_person_id(event_id: i64) -> i64 {
    let t = TOTAL_PROPORTION as i64;
    let p = PERSON_PROPORTION as i64;
    let (epoch, offset) = (event_id / t, (event_id % t).min(p - 1));
    epoch * p + offset
}

fn last_base0_auction_id(event_id: i64) -> i64 {
    let (t, p, a) = (
        TOTAL_PROPORTION as i64,
        PERSON_PROPORTION as i64,
        AUCTION_PROPORTION as i64,
    );
    let (mut epoch, mut offset) = (event_id / t, event_id % t);
    if offset < p {
        epoch -= 1;
        offset = a - 1;
    } else if offset >= p + a {
        offset = a - 1;
    } else {
        offset -= p;
    }
    epoch * a + offset
}

/// A person active recently, or one of the next few to register.
fn next_base0_person_id(event_id: i64, rng: &mut SplitMix64) -> i64 {
    let people = last_base0_person_id(event_id) + 1;
    let active = people.min(NUM_ACTIVE_PEOPLE);
    people - active + rng.below_u64((active + PERSON_ID_LEAD) as u64) as i64
}

/// An auction in flight, or one of the next few to open.
fn next_base0_auction_id(event_id: i64, rng: &mut SplitMix64) -> i64 {
    let max = last_base0_auction_id(event_id);
    let min = (max - NUM_IN_FLIGHT_AUCTIONS).max(0);
    min + rng.below_u64((max - min + 1 + AUCTION_ID_LEAD) as u64) as i64
}

fn cow(s: String) -> Cow<'static, [u8]> {
    Cow::Owned(s.into_bytes())
}

fn text(s: &'static str) -> Cow<'static, [u8]> {
    Cow::Borrowed(s.as_bytes())
}

impl Generator {
    /// A generator of `config`'s stream; a `tps` of 0 counts as 1.
    pub fn new(config: GeneratorConfig) -> Self {
        Generator {
            delay_us: 1_000_000.0 / config.tps.max(1) as f64,
            config,
        }
    }

    /// What it generates.
    pub fn config(&self) -> &GeneratorConfig {
        &self.config
    }

    /// Event time of event `i`, ms since the epoch.
    pub fn timestamp(&self, i: u64) -> i64 {
        self.config.base_time + ((i as f64 * self.delay_us) as i64) / 1000
    }

    /// Event `i` of the stream.
    pub fn event(&self, i: u64) -> Event<'static> {
        let mut rng = SplitMix64::new(i);
        let id = i as i64;
        let timestamp = self.timestamp(i);
        match i % TOTAL_PROPORTION {
            r if r < PERSON_PROPORTION => Event::Person(self.person(id, timestamp, &mut rng)),
            r if r < PERSON_PROPORTION + AUCTION_PROPORTION => {
                Event::Auction(self.auction(i, timestamp, &mut rng))
            }
            _ => Event::Bid(self.bid(id, timestamp, &mut rng)),
        }
    }

    fn person(&self, id: i64, timestamp: i64, rng: &mut SplitMix64) -> Person<'static> {
        let first = FIRST_NAMES[rng.below(FIRST_NAMES.len() as u32) as usize];
        let last = LAST_NAMES[rng.below(LAST_NAMES.len() as u32) as usize];
        let name = format!("{first} {last}");
        let email = format!(
            "{}@{}.com",
            random_string(rng, 7, ' '),
            random_string(rng, 5, ' ')
        );
        let card = [0; 4]
            .map(|_| format!("{:04}", rng.below(10_000)))
            .join(" ");
        let city = CITIES[rng.below(CITIES.len() as u32) as usize];
        let state = STATES[rng.below(STATES.len() as u32) as usize];
        let size = 8 + name.len() + email.len() + card.len() + city.len() + state.len();
        Person {
            id: last_base0_person_id(id) as u64 + FIRST_PERSON_ID,
            name: cow(name),
            email_address: cow(email),
            credit_card: cow(card),
            city: text(city),
            state: text(state),
            date_time: timestamp,
            extra: text(padding(rng, size, AVG_PERSON_BYTES)),
        }
    }

    fn auction(&self, i: u64, timestamp: i64, rng: &mut SplitMix64) -> Auction<'static> {
        let id = i as i64;
        let seller = if rng.below(HOT_SELLER_RATIO) > 0 {
            last_base0_person_id(id) / HOT_BATCH * HOT_BATCH
        } else {
            next_base0_person_id(id, rng)
        };
        let category = FIRST_CATEGORY_ID + u64::from(rng.below(NUM_CATEGORIES));
        let initial_bid = price(rng);
        // Auctions last about as long as it takes for the number in flight
        // to open after them.
        let lookahead = (NUM_IN_FLIGHT_AUCTIONS as u64 * TOTAL_PROPORTION) / AUCTION_PROPORTION;
        let horizon = self.timestamp(i + lookahead) - timestamp;
        let length = 1 + rng.below_u64((2 * horizon).max(1) as u64) as i64;
        let item_name = random_string(rng, 20, ' ');
        let description = random_string(rng, 100, ' ');
        let reserve = initial_bid + price(rng);
        let size = 8 + item_name.len() + description.len() + 40;
        Auction {
            id: last_base0_auction_id(id) as u64 + FIRST_AUCTION_ID,
            item_name: cow(item_name),
            description: cow(description),
            initial_bid,
            reserve,
            date_time: timestamp,
            expires: timestamp + length,
            seller: seller as u64 + FIRST_PERSON_ID,
            category,
            extra: text(padding(rng, size, AVG_AUCTION_BYTES)),
        }
    }

    fn bid(&self, id: i64, timestamp: i64, rng: &mut SplitMix64) -> Bid<'static> {
        let auction = if rng.below(HOT_AUCTION_RATIO) > 0 {
            last_base0_auction_id(id) / HOT_BATCH * HOT_BATCH
        } else {
            next_base0_auction_id(id, rng)
        };
        let bidder = if rng.below(HOT_BIDDER_RATIO) > 0 {
            last_base0_person_id(id) / HOT_BATCH * HOT_BATCH + 1
        } else {
            next_base0_person_id(id, rng)
        };
        let price = price(rng);
        let t = tables();
        let (channel, url) = if rng.below(2) > 0 {
            let k = rng.below(HOT_CHANNELS.len() as u32) as usize;
            (HOT_CHANNELS[k], t.hot_urls[k].as_str())
        } else {
            let c = rng.below(CHANNELS as u32) as usize;
            (t.channel_names[c].as_str(), t.channel_urls[c].as_str())
        };
        Bid {
            auction: auction as u64 + FIRST_AUCTION_ID,
            bidder: bidder as u64 + FIRST_PERSON_ID,
            price,
            channel: text(channel),
            url: text(url),
            date_time: timestamp,
            extra: text(padding(rng, 32, AVG_BID_BYTES)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(n: u64) -> Vec<Event<'static>> {
        let g = Generator::new(GeneratorConfig {
            events: n,
            ..GeneratorConfig::default()
        });
        (0..n).map(|i| g.event(i)).collect()
    }

    #[test]
    fn kinds_come_in_the_nexmark_proportions_and_ids_count_up() {
        let events = stream(5000);
        let persons: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                Event::Person(p) => Some(p.id),
                _ => None,
            })
            .collect();
        let auctions: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                Event::Auction(a) => Some(a.id),
                _ => None,
            })
            .collect();
        assert_eq!(persons, (1000..1100).collect::<Vec<_>>());
        assert_eq!(auctions, (1000..1300).collect::<Vec<_>>());
        assert_eq!(events.len() - persons.len() - auctions.len(), 4600);
    }

    #[test]
    fn references_point_at_people_and_auctions_that_exist_or_soon_will() {
        let events = stream(20_000);
        let (mut people, mut auctions) = (0u64, 0u64);
        let mut hot_bids = 0;
        let mut bids = 0;
        for e in &events {
            match e {
                Event::Person(_) => people += 1,
                Event::Auction(a) => {
                    auctions += 1;
                    assert!(a.seller < 1000 + people + 10, "{a:?}");
                    assert!((10..15).contains(&a.category));
                    assert!(a.reserve > a.initial_bid && a.expires > a.date_time);
                }
                Event::Bid(b) => {
                    bids += 1;
                    assert!(b.auction < 1000 + auctions + 10, "{b:?}");
                    assert!(b.bidder < 1000 + people + 10, "{b:?}");
                    assert!((100..=100_000_000).contains(&b.price));
                    hot_bids += usize::from(b.auction % 100 == 0);
                }
            }
        }
        // Half the bids go to the hot auction of the batch (plus cold ones
        // that land on it by chance).
        let share = hot_bids as f64 / bids as f64;
        assert!((0.45..0.6).contains(&share), "{share}");
    }

    #[test]
    fn padding_brings_events_to_nexmarks_sizes() {
        // Nexmark sizes an event as 8 bytes plus its strings (40 more for an
        // auction's numbers, 32 for a bid's fields; a bid's URL, added to
        // Nexmark later, is not counted), padded to within 20 % of the
        // average.
        let mut sizes = [Vec::new(), Vec::new(), Vec::new()];
        for e in stream(20_000) {
            match e {
                Event::Person(p) => sizes[0].push(
                    8 + p.name.len()
                        + p.email_address.len()
                        + p.credit_card.len()
                        + p.city.len()
                        + p.state.len()
                        + p.extra.len(),
                ),
                Event::Auction(a) => {
                    sizes[1].push(8 + a.item_name.len() + a.description.len() + 40 + a.extra.len())
                }
                Event::Bid(b) => sizes[2].push(32 + b.extra.len()),
            }
        }
        for (k, average) in [(0, 200.0), (1, 500.0), (2, 100.0)] {
            let s = &sizes[k];
            assert!(
                s.iter()
                    .all(|&n| (average * 0.79..average * 1.21).contains(&(n as f64))),
                "kind {k}"
            );
            let mean = s.iter().sum::<usize>() as f64 / s.len() as f64;
            assert!(
                (average * 0.97..average * 1.03).contains(&mean),
                "kind {k}: {mean}"
            );
        }
    }

    #[test]
    fn an_event_depends_on_its_index_alone_and_survives_encoding() {
        let g = Generator::new(GeneratorConfig::default());
        for i in [0, 1, 4, 49, 50, 12_345, 9_999_999] {
            let e = g.event(i);
            assert_eq!(e, g.event(i));
            assert_eq!(Event::decode(&e.encode()).expect("decodes"), e);
            assert_eq!(Event::is_bid(&e.encode()), matches!(e, Event::Bid(_)));
        }
        assert!(Event::decode(b"\x07junk").is_err());
    }

    #[test]
    fn event_time_advances_at_the_configured_rate() {
        let g = Generator::new(GeneratorConfig {
            events: 0,
            tps: 1000,
            base_time: 0,
        });
        assert_eq!(g.timestamp(0), 0);
        assert_eq!(g.timestamp(999), 999);
        assert_eq!(g.timestamp(10_000), 10_000);
        let fast = Generator::new(GeneratorConfig::default());
        assert_eq!(fast.timestamp(10_000_000) - fast.timestamp(0), 1000);
    }

    #[test]
    fn the_integer_roundings_match_the_reference_floating_point_ones() {
        for d in 0..1_000_000u32 {
            assert_eq!((d + 2) / 5, (f64::from(d) * 0.2).round() as u32, "{d}");
        }
        let mut rng = SplitMix64::new(3);
        let edges = [
            0.0,
            0.5,
            1.5,
            2.4999999999999996,
            99.5,
            1e8 + 0.5,
            4503599627370495.5,
        ];
        let draws = (0..1_000_000).map(|_| 10f64.powf(rng.next_f64() * 6.0) * 100.0);
        for x in edges.into_iter().chain(draws) {
            assert_eq!(round_positive(x), x.round() as u64, "{x}");
        }
    }

    #[test]
    fn padding_and_urls_are_fixed_text() {
        let t = tables();
        assert_eq!(t.padding.len(), PADDING_TEXT);
        assert!(t.padding.bytes().all(|b| (b'H'..=b'z').contains(&b)));
        assert!(t.channel_urls[1].starts_with("https://www.nexmark.com/"));
        assert_eq!(t.channel_names[42], "channel-42");
    }
}
