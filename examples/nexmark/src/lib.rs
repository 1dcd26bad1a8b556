//! Nexmark queries over the `nexmark` connector's event stream.
//!
//! `query=q0|q1|q2|q3|q4|q5|q7|q8 events=N [tps=T] [output=DIR]`: the connector
//! generates N events (persons, auctions and bids, T per second of event
//! time); the query's result goes to `output` as CSV lines, or, without an
//! output, to a blackhole (for benchmarks).
//!
//! - q0, pass-through: every bid as `auction,bidder,price,dateTime,extra`.
//! - q1, currency conversion: the same with the price (in cents) converted
//!   to euro cents, `0.908 × price` exactly (three decimals), as Nexmark
//!   computes it.
//! - q2, selection: `auction,price` of the bids on auctions whose id is a
//!   multiple of 123.
//! - q3, local item suggestion: `name,city,state,auctionId` for every
//!   auction in category 10 by a seller from Oregon, Idaho or California (a
//!   join of auctions and persons by seller, kept in keyed state).
//! - q4, average closing price per category: an auction closes at its
//!   expiry with its highest bid placed between its opening and its expiry
//!   (a join of auctions and bids by auction, kept in keyed state); per
//!   category and 10 s tumbling window of closing time,
//!   `category,windowStart,auctions,average` over the auctions that closed
//!   with a bid (the average in whole cents, rounded down).
//! - q5, hot items: `auction,bids` of the auctions with the most bids in
//!   each 10 s window sliding by 2 s (ties all listed).
//! - q7, highest bid: `auction,price,bidder,dateTime,extra` of the bids at
//!   the highest price of each 10 s tumbling window.
//! - q8, new users: `id,name,windowStart` of the persons who registered and
//!   opened an auction in the same 10 s tumbling window.
//!
//! - `synthetic`: not Nexmark, the benchmarks' 100-byte pipeline: the
//!   `datagen` connector's records (the index in decimal, padded to 100
//!   bytes), those whose index is a multiple of 10 dropped, the rest
//!   counted per key `index % 10000` in keyed state; each record yields its
//!   key's count so far (8 bytes, little-endian).
//!
//! Windows are in event time, with Nexmark's watermark (4 s behind the
//! newest event); windows are `[start, start + size)`, fired once the
//! watermark passes their last millisecond, built with the SDK's window
//! operators (`keyed_window`; records later than that are dropped, as
//! Flink's window operators drop them).

use serde::{Deserialize, Serialize};
use sluice_nexmark::{Bid, Event};
use sluice_sdk::ValueWriter;
use sluice_sdk::prelude::*;

struct Nexmark;

/// The dollar-to-euro rate of q1.
const EUROS_PER_1000_DOLLARS: u64 = 908;
/// q2 keeps the bids on auctions whose id is a multiple of this.
const Q2_MODULUS: u64 = 123;
/// q3's category and states.
const Q3_CATEGORY: u64 = 10;
const Q3_STATES: [&str; 3] = ["OR", "ID", "CA"];
/// Window sizes: q7's and q8's tumbling windows, q5's sliding ones.
const TUMBLE_MS: i64 = 10_000;
const HOP_SIZE_MS: i64 = 10_000;
const HOP_SLIDE_MS: i64 = 2_000;
/// The synthetic pipeline drops one record in this many and counts the rest
/// over this many keys.
const SYNTHETIC_DROP: u64 = 10;
const SYNTHETIC_KEYS: u64 = 10_000;
const SYNTHETIC_RECORD_BYTES: u64 = 100;
/// Nexmark's watermark trails the newest event by this much.
const WATERMARK_DELAY_MS: u64 = 4_000;

fn tumble(ts: i64) -> i64 {
    ts - ts.rem_euclid(TUMBLE_MS)
}

fn u64_key(key: &[u8]) -> Result<u64, Error> {
    Ok(u64::from_le_bytes(
        key.try_into().map_err(|_| failed("a key is not a u64"))?,
    ))
}

fn i64_key(key: &[u8]) -> Result<i64, Error> {
    Ok(u64_key(key)? as i64)
}

fn decode<'a>(r: &Record<'a>) -> Result<Event<'a>, Error> {
    Event::decode(r.value).map_err(|e| failed(e.to_string()))
}

/// CSV fields appended to a record's value as it is emitted.
trait Csv {
    fn int(&mut self, n: impl itoa::Integer) -> &mut Self;
    fn text(&mut self, t: &[u8]) -> &mut Self;
    fn comma(&mut self) -> &mut Self;
}

impl Csv for ValueWriter<'_> {
    fn int(&mut self, n: impl itoa::Integer) -> &mut Self {
        self.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self
    }

    fn text(&mut self, t: &[u8]) -> &mut Self {
        self.extend_from_slice(t);
        self
    }

    fn comma(&mut self) -> &mut Self {
        self.push(b',');
        self
    }
}

/// The line `write` makes of every bid `keep` keeps; other events are
/// dropped. The line is written straight into the output.
fn bids(
    keep: fn(&Bid<'_>) -> bool,
    write: fn(&Bid<'_>, &mut ValueWriter<'_>),
) -> impl FnMut(Record<'_>, &mut Collector) -> Result<(), Error> + Clone + 'static {
    move |r, out| {
        if let Event::Bid(b) = decode(&r)?
            && keep(&b)
        {
            out.emit_with(|line| write(&b, line));
        }
        Ok(())
    }
}

fn every_bid(_: &Bid<'_>) -> bool {
    true
}

fn q0(b: &Bid<'_>, l: &mut ValueWriter<'_>) {
    l.int(b.auction).comma().int(b.bidder).comma().int(b.price);
    l.comma().int(b.date_time).comma().text(&b.extra);
}

/// A price in dollar cents in euro cents: the whole cents and the
/// thousandths, exactly, for every `u64` price. (price × rate) / 1000 and
/// its remainder, computed as (1000q + r) × rate = 1000 × q × rate + r ×
/// rate without the 128-bit product, which is a library call in wasm32
/// (q1's hottest cost after its own code): q × rate stays within `u64`
/// because the rate is below 1000.
fn euro_cents(price: u64) -> (u64, u16) {
    const _: () = assert!(EUROS_PER_1000_DOLLARS < 1000);
    let (q, r) = (price / 1000, price % 1000);
    let rest = r * EUROS_PER_1000_DOLLARS;
    (
        q * EUROS_PER_1000_DOLLARS + rest / 1000,
        (rest % 1000) as u16,
    )
}

fn q1(b: &Bid<'_>, l: &mut ValueWriter<'_>) {
    let (cents, thousandths) = euro_cents(b.price);
    l.int(b.auction).comma().int(b.bidder).comma().int(cents);
    l.text(b".");
    if thousandths < 100 {
        l.text(if thousandths < 10 { b"00" } else { b"0" });
    }
    l.int(thousandths)
        .comma()
        .int(b.date_time)
        .comma()
        .text(&b.extra);
}

fn q2_keeps(b: &Bid<'_>) -> bool {
    b.auction.is_multiple_of(Q2_MODULUS)
}

fn q2(b: &Bid<'_>, l: &mut ValueWriter<'_>) {
    l.int(b.auction).comma().int(b.price);
}

/// Text of an event, for the rare lines built with `format!`.
fn str(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// q3's inputs, keyed by person: the sellers that qualify and the auctions
/// of category 10.
fn q3_select(r: Record<'_>, out: &mut Collector) -> Result<(), Error> {
    if Event::is_bid(r.value) {
        return Ok(());
    }
    match decode(&r)? {
        Event::Person(p) if Q3_STATES.iter().any(|s| s.as_bytes() == &*p.state) => {
            out.emit_keyed(&p.id.to_le_bytes(), r.value)
        }
        Event::Auction(a) if a.category == Q3_CATEGORY => {
            out.emit_keyed(&a.seller.to_le_bytes(), r.value)
        }
        _ => {}
    }
    Ok(())
}

/// Per person: who they are, once known, and the auctions that arrived
/// before them (a seller's id may run a little ahead of the persons seen).
#[derive(Default, Serialize, Deserialize)]
struct Seller {
    person: Option<(String, String, String)>,
    waiting: Vec<u64>,
}

struct Q3Join;

impl KeyedProcess for Q3Join {
    type State = Seller;

    fn process(
        &mut self,
        ctx: &mut KeyedContext<'_, Seller>,
        r: Record<'_>,
        out: &mut Collector,
    ) -> Result<(), Error> {
        let seller = ctx.state_or_default();
        match decode(&r)? {
            Event::Person(p) => {
                let (name, city, state) = (str(&p.name), str(&p.city), str(&p.state));
                for auction in std::mem::take(&mut seller.waiting) {
                    out.emit(format!("{name},{city},{state},{auction}").as_bytes());
                }
                seller.person = Some((name.into(), city.into(), state.into()));
            }
            Event::Auction(a) => match &seller.person {
                Some((name, city, state)) => {
                    out.emit(format!("{name},{city},{state},{}", a.id).as_bytes())
                }
                None => seller.waiting.push(a.id),
            },
            Event::Bid(_) => return Err(failed("q3 joins persons and auctions, not bids")),
        }
        Ok(())
    }
}

/// q4, first step: auctions and bids keyed by auction.
fn q4_by_auction(r: Record<'_>, out: &mut Collector) -> Result<(), Error> {
    match decode(&r)? {
        Event::Auction(a) => out.emit_keyed(&a.id.to_le_bytes(), r.value),
        Event::Bid(b) => out.emit_keyed(&b.auction.to_le_bytes(), r.value),
        Event::Person(_) => {}
    }
    Ok(())
}

/// One auction while it is open: its category, opening and expiry once it
/// is known, its highest qualifying bid so far, and the bids (time, price)
/// that arrived before it did (another source subtask may run ahead).
#[derive(Default, Serialize, Deserialize)]
struct Open {
    auction: Option<(u64, i64, i64)>,
    best: Option<u64>,
    early: Vec<(i64, u64)>,
}

impl Open {
    fn bid(&mut self, at: i64, price: u64) {
        if let Some((_, opened, expires)) = self.auction
            && (opened..=expires).contains(&at)
        {
            self.best = Some(self.best.map_or(price, |b| b.max(price)));
        }
    }
}

/// q4, second step: the winning bid of each auction, emitted at its expiry
/// as `(category, price)` keyed by category. Bids that wait for an auction
/// that never comes are dropped one tumbling window after they were placed.
struct Q4Winner;

impl KeyedProcess for Q4Winner {
    type State = Open;

    fn process(
        &mut self,
        ctx: &mut KeyedContext<'_, Open>,
        r: Record<'_>,
        _: &mut Collector,
    ) -> Result<(), Error> {
        let open = ctx.state_or_default();
        let timer = match decode(&r)? {
            Event::Auction(a) => {
                open.auction = Some((a.category, a.date_time, a.expires));
                for (at, price) in std::mem::take(&mut open.early) {
                    open.bid(at, price);
                }
                a.expires
            }
            Event::Bid(b) if open.auction.is_some() => {
                open.bid(b.date_time, b.price);
                return Ok(());
            }
            Event::Bid(b) => {
                open.early.push((b.date_time, b.price));
                b.date_time + TUMBLE_MS
            }
            Event::Person(_) => return Err(failed("q4 joins auctions and bids, not persons")),
        };
        ctx.register_event_timer(timer);
        Ok(())
    }

    fn on_timer(
        &mut self,
        ctx: &mut KeyedContext<'_, Open>,
        timer: Timer,
        out: &mut Collector,
    ) -> Result<(), Error> {
        let Some(open) = ctx.state() else {
            return Ok(());
        };
        match open.auction {
            Some((category, _, expires)) if timer.time >= expires => {
                if let Some(price) = open.best {
                    out.emit_at(Some(&category.to_le_bytes()), &price.to_le_bytes(), expires);
                }
                ctx.clear_state();
            }
            Some(_) => {}
            None => {
                open.early.retain(|&(at, _)| at + TUMBLE_MS > timer.time);
                if open.early.is_empty() {
                    ctx.clear_state();
                }
            }
        }
        Ok(())
    }
}

/// q4, last step: per category and tumbling window of closing time, the
/// number of auctions closed with a bid and their average price.
struct Q4Average;

impl WindowAggregate for Q4Average {
    /// Auctions closed with a bid, and the sum of their prices.
    type Acc = (u64, u128);

    fn add(
        &mut self,
        acc: &mut (u64, u128),
        _: Window,
        _: u32,
        r: &Record<'_>,
    ) -> Result<(), Error> {
        acc.0 += 1;
        acc.1 += u128::from(u64_key(r.value)?);
        Ok(())
    }

    fn fire(
        &mut self,
        category: &[u8],
        w: Window,
        &(n, sum): &(u64, u128),
        out: &mut Collector,
    ) -> Result<(), Error> {
        let category = u64_key(category)?;
        let average = sum / u128::from(n);
        out.emit(format!("{category},{},{n},{average}", w.start).as_bytes());
        Ok(())
    }
}

/// q5, first step: bids keyed by auction.
fn q5_by_auction(r: Record<'_>, out: &mut Collector) -> Result<(), Error> {
    if let Event::Bid(b) = decode(&r)? {
        out.emit_keyed(&b.auction.to_le_bytes(), &[]);
    }
    Ok(())
}

/// q5, second step: counts an auction's bids in every sliding window they
/// fall in, and emits `(auction, count)` keyed by window when it closes.
struct Q5Count;

impl WindowAggregate for Q5Count {
    type Acc = u64;

    fn add(&mut self, bids: &mut u64, _: Window, _: u32, _: &Record<'_>) -> Result<(), Error> {
        *bids += 1;
        Ok(())
    }

    fn fire(
        &mut self,
        auction: &[u8],
        w: Window,
        bids: &u64,
        out: &mut Collector,
    ) -> Result<(), Error> {
        let mut value = [0u8; 16];
        value[..8].copy_from_slice(&u64_key(auction)?.to_le_bytes());
        value[8..].copy_from_slice(&bids.to_le_bytes());
        out.emit_keyed(&w.start.to_le_bytes(), &value);
        Ok(())
    }
}

/// One window's auctions with the most bids so far, and that number.
#[derive(Default, Serialize, Deserialize)]
struct Hottest {
    bids: u64,
    auctions: Vec<u64>,
}

/// q5, last step: per window, the auctions with the most bids.
struct Q5Hot;

impl KeyedProcess for Q5Hot {
    type State = Hottest;

    fn process(
        &mut self,
        ctx: &mut KeyedContext<'_, Hottest>,
        r: Record<'_>,
        _: &mut Collector,
    ) -> Result<(), Error> {
        let (auction, bids) = r
            .value
            .split_at_checked(8)
            .ok_or_else(|| failed("a short count"))?;
        let (auction, bids) = (u64_key(auction)?, u64_key(bids)?);
        let start = i64_key(ctx.key())?;
        if ctx.get().is_none() {
            ctx.register_event_timer(start + HOP_SIZE_MS - 1);
        }
        let hot = ctx.state_or_default();
        if bids > hot.bids {
            hot.bids = bids;
            hot.auctions.clear();
        }
        if bids == hot.bids {
            hot.auctions.push(auction);
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        ctx: &mut KeyedContext<'_, Hottest>,
        _: Timer,
        out: &mut Collector,
    ) -> Result<(), Error> {
        if let Some(hot) = ctx.state().take() {
            for auction in hot.auctions {
                out.emit(format!("{auction},{}", hot.bids).as_bytes());
            }
        }
        Ok(())
    }
}

/// q7, first step: bids keyed by their tumbling window.
fn q7_by_window(r: Record<'_>, out: &mut Collector) -> Result<(), Error> {
    if let Event::Bid(b) = decode(&r)? {
        out.emit_keyed(&tumble(b.date_time).to_le_bytes(), r.value);
    }
    Ok(())
}

/// One window's highest price so far and its bids, as output lines.
#[derive(Default, Serialize, Deserialize)]
struct Highest {
    price: u64,
    bids: Vec<String>,
}

/// q7, second step: per window, the bids at its highest price.
struct Q7Max;

impl WindowAggregate for Q7Max {
    type Acc = Highest;

    fn add(
        &mut self,
        highest: &mut Highest,
        _: Window,
        _: u32,
        r: &Record<'_>,
    ) -> Result<(), Error> {
        let Event::Bid(b) = decode(r)? else {
            return Err(failed("q7 takes bids"));
        };
        if b.price > highest.price || highest.bids.is_empty() {
            highest.price = b.price;
            highest.bids.clear();
        }
        if b.price == highest.price {
            highest.bids.push(format!(
                "{},{},{},{},{}",
                b.auction,
                b.price,
                b.bidder,
                b.date_time,
                str(&b.extra)
            ));
        }
        Ok(())
    }

    fn fire(
        &mut self,
        _: &[u8],
        _: Window,
        highest: &Highest,
        out: &mut Collector,
    ) -> Result<(), Error> {
        for line in &highest.bids {
            out.emit(line.as_bytes());
        }
        Ok(())
    }
}

/// q8, first step: persons by id and auctions by seller.
fn q8_select(r: Record<'_>, out: &mut Collector) -> Result<(), Error> {
    if Event::is_bid(r.value) {
        return Ok(());
    }
    match decode(&r)? {
        Event::Person(p) => out.emit_keyed(&p.id.to_le_bytes(), r.value),
        Event::Auction(a) => out.emit_keyed(&a.seller.to_le_bytes(), r.value),
        Event::Bid(_) => {}
    }
    Ok(())
}

/// q8, second step: persons who registered and sold in one window.
struct Q8Join;

impl WindowAggregate for Q8Join {
    /// The person's name if they registered in the window, and whether
    /// they opened an auction in it.
    type Acc = (Option<String>, bool);

    fn add(
        &mut self,
        (name, sold): &mut (Option<String>, bool),
        _: Window,
        _: u32,
        r: &Record<'_>,
    ) -> Result<(), Error> {
        match decode(r)? {
            Event::Person(p) => *name = Some(str(&p.name).into()),
            Event::Auction(_) => *sold = true,
            Event::Bid(_) => return Err(failed("q8 joins persons and auctions, not bids")),
        }
        Ok(())
    }

    fn fire(
        &mut self,
        id: &[u8],
        w: Window,
        acc: &(Option<String>, bool),
        out: &mut Collector,
    ) -> Result<(), Error> {
        if let (Some(name), true) = acc {
            let id = u64_key(id)?;
            out.emit(format!("{id},{name},{}", w.start).as_bytes());
        }
        Ok(())
    }
}

/// The synthetic pipeline's first step: drops one record in ten and keys
/// the rest.
fn synthetic_filter(r: Record<'_>, out: &mut Collector) -> Result<(), Error> {
    let digits = r.value.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return Err(failed("a synthetic record does not start with its index"));
    }
    let index = r.value[..digits]
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    if !index.is_multiple_of(SYNTHETIC_DROP) {
        out.emit_keyed(&(index % SYNTHETIC_KEYS).to_le_bytes(), r.value);
    }
    Ok(())
}

/// The synthetic pipeline's count: records per key, in keyed state.
struct SyntheticCount;

impl KeyedProcess for SyntheticCount {
    type State = u64;

    fn process(
        &mut self,
        ctx: &mut KeyedContext<'_, u64>,
        _: Record<'_>,
        out: &mut Collector,
    ) -> Result<(), Error> {
        let count = ctx.state_or_default();
        *count += 1;
        out.emit(&count.to_le_bytes());
        Ok(())
    }
}

impl Application for Nexmark {
    fn operators() -> Vec<OperatorDef> {
        vec![
            map("q0", bids(every_bid, q0)).describe("bids as CSV"),
            map("q1", bids(every_bid, q1)).describe("bids with prices in euros"),
            map("q2", bids(q2_keeps, q2)).describe("bids on every 123rd auction"),
            flat_map("q3-select", q3_select)
                .describe("category-10 auctions and OR/ID/CA persons, keyed by person"),
            keyed_process("q3-join", |_| Ok(Q3Join)).describe("auctions joined with their sellers"),
            flat_map("q4-by-auction", q4_by_auction).describe("auctions and bids keyed by auction"),
            keyed_process("q4-winner", |_| Ok(Q4Winner))
                .describe("each auction's winning bid at its expiry"),
            keyed_window("q4-average", Windows::tumbling(TUMBLE_MS), |_| {
                Ok(Q4Average)
            })
            .describe("average closing price per category and window"),
            flat_map("q5-by-auction", q5_by_auction).describe("bids keyed by auction"),
            keyed_window(
                "q5-count",
                Windows::sliding(HOP_SIZE_MS, HOP_SLIDE_MS),
                |_| Ok(Q5Count),
            )
            .describe("bids per auction per sliding window"),
            keyed_process("q5-hot", |_| Ok(Q5Hot))
                .describe("the auctions with the most bids per window"),
            flat_map("q7-by-window", q7_by_window).describe("bids keyed by tumbling window"),
            keyed_window("q7-max", Windows::tumbling(TUMBLE_MS), |_| Ok(Q7Max))
                .describe("the highest bids per window"),
            flat_map("q8-select", q8_select).describe("persons and auctions keyed by person"),
            keyed_window("q8-join", Windows::tumbling(TUMBLE_MS), |_| Ok(Q8Join))
                .describe("persons who registered and sold in one window"),
            flat_map("synthetic-filter", synthetic_filter)
                .describe("datagen records, one in ten dropped, keyed"),
            keyed_process("synthetic-count", |_| Ok(SyntheticCount)).describe("records per key"),
        ]
    }

    fn plan(args: &Args) -> Result<Graph, Error> {
        let query = args.require("query")?;
        let mut g = Graph::new();
        let sink = match args.get("output") {
            Some(dir) => Node::connector("write", "file-sink").config("path", dir),
            None => Node::connector("discard", "blackhole"),
        };
        if query == "synthetic" {
            let source = g.add(
                Node::connector("generate", "datagen")
                    .config("count", args.require("events")?)
                    .config("value-bytes", SYNTHETIC_RECORD_BYTES),
            );
            let filter = g.add(Node::guest("filter", "synthetic-filter"));
            let count = g.add(Node::guest("count", "synthetic-count"));
            let sink = g.add(sink);
            g.forward(&source, &filter)
                .hash(&filter, &count)
                .forward(&count, &sink);
            return Ok(g);
        }
        let source = g.add(
            Node::connector("events", "nexmark")
                .config("events", args.require("events")?)
                .config("tps", args.parse_or::<u64>("tps", 10_000_000)?)
                .watermarks(WATERMARK_DELAY_MS),
        );
        let last = match query {
            "q0" | "q1" | "q2" => {
                let q = g.add(Node::guest(query, query));
                g.forward(&source, &q);
                q
            }
            "q3" => {
                let select = g.add(Node::guest("select", "q3-select"));
                let join = g.add(Node::guest("join", "q3-join"));
                g.forward(&source, &select).hash(&select, &join);
                join
            }
            "q4" => {
                let by_auction = g.add(Node::guest("by-auction", "q4-by-auction"));
                let winner = g.add(Node::guest("winner", "q4-winner"));
                let average = g.add(Node::guest("average", "q4-average"));
                g.forward(&source, &by_auction)
                    .hash(&by_auction, &winner)
                    .hash(&winner, &average);
                average
            }
            "q5" => {
                let by_auction = g.add(Node::guest("by-auction", "q5-by-auction"));
                let count = g.add(Node::guest("count", "q5-count"));
                let hot = g.add(Node::guest("hot", "q5-hot"));
                g.forward(&source, &by_auction)
                    .hash(&by_auction, &count)
                    .hash(&count, &hot);
                hot
            }
            "q7" => {
                let by_window = g.add(Node::guest("by-window", "q7-by-window"));
                let max = g.add(Node::guest("max", "q7-max"));
                g.forward(&source, &by_window).hash(&by_window, &max);
                max
            }
            "q8" => {
                let select = g.add(Node::guest("select", "q8-select"));
                let join = g.add(Node::guest("join", "q8-join"));
                g.forward(&source, &select).hash(&select, &join);
                join
            }
            other => {
                return Err(invalid_config(format!(
                    "query `{other}` is not one of q0, q1, q2, q3, q4, q5, q7, q8, synthetic"
                )));
            }
        };
        let sink = g.add(sink);
        g.forward(&last, &sink);
        Ok(g)
    }
}

sluice_sdk::export_app!(Nexmark);
