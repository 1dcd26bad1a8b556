//! Nexmark queries over the `nexmark` connector's event stream.
//!
//! `query=q0|q1|q2|q3 events=N [tps=T] [output=DIR]`: the connector
//! generates N events (persons, auctions and bids, T per second of event
//! time); the query's result goes to `output` as CSV lines, or, without an
//! output, to a blackhole (for benchmarks).
//!
//! - q0, pass-through: every bid as `auction,bidder,price,dateTime,extra`.
//! - q1, currency conversion: the same with the price in euros,
//!   `0.908 × price` exactly (three decimals).
//! - q2, selection: `auction,price` of the bids on auctions whose id is a
//!   multiple of 123.
//! - q3, local item suggestion: `name,city,state,auctionId` for every
//!   auction in category 10 by a seller from Oregon, Idaho or California (a
//!   join of auctions and persons by seller, kept in keyed state).

use serde::{Deserialize, Serialize};
use sluice_nexmark::{Bid, Event};
use sluice_sdk::prelude::*;

struct Nexmark;

/// The dollar-to-euro rate of q1.
const EUROS_PER_1000_DOLLARS: u64 = 908;
/// q2 keeps the bids on auctions whose id is a multiple of this.
const Q2_MODULUS: u64 = 123;
/// q3's category and states.
const Q3_CATEGORY: u64 = 10;
const Q3_STATES: [&str; 3] = ["OR", "ID", "CA"];

fn decode<'a>(r: &Record<'a>) -> Result<Event<'a>, Error> {
    Event::decode(r.value).map_err(|e| failed(e.to_string()))
}

/// `line` for every bid; other events are dropped.
fn bids(
    line: fn(&Bid<'_>) -> Option<String>,
) -> impl FnMut(Record<'_>, &mut Collector) -> Result<(), Error> + Clone + 'static {
    move |r, out| {
        if let Event::Bid(b) = decode(&r)?
            && let Some(l) = line(&b)
        {
            out.emit(l.as_bytes());
        }
        Ok(())
    }
}

fn q0(b: &Bid<'_>) -> Option<String> {
    Some(format!(
        "{},{},{},{},{}",
        b.auction, b.bidder, b.price, b.date_time, b.extra
    ))
}

fn q1(b: &Bid<'_>) -> Option<String> {
    let milli_euros = b.price * EUROS_PER_1000_DOLLARS;
    Some(format!(
        "{},{},{}.{:03},{},{}",
        b.auction,
        b.bidder,
        milli_euros / 1000,
        milli_euros % 1000,
        b.date_time,
        b.extra
    ))
}

fn q2(b: &Bid<'_>) -> Option<String> {
    b.auction
        .is_multiple_of(Q2_MODULUS)
        .then(|| format!("{},{}", b.auction, b.price))
}

/// q3's inputs, keyed by person: the sellers that qualify and the auctions
/// of category 10.
fn q3_select(r: Record<'_>, out: &mut Collector) -> Result<(), Error> {
    match decode(&r)? {
        Event::Person(p) if Q3_STATES.contains(&&*p.state) => {
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
                for auction in std::mem::take(&mut seller.waiting) {
                    out.emit(format!("{},{},{},{auction}", p.name, p.city, p.state).as_bytes());
                }
                seller.person = Some((p.name.into(), p.city.into(), p.state.into()));
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

impl Application for Nexmark {
    fn operators() -> Vec<OperatorDef> {
        vec![
            map("q0", bids(q0)).describe("bids as CSV"),
            map("q1", bids(q1)).describe("bids with prices in euros"),
            map("q2", bids(q2)).describe("bids on every 123rd auction"),
            flat_map("q3-select", q3_select)
                .describe("category-10 auctions and OR/ID/CA persons, keyed by person"),
            keyed_process("q3-join", |_| Ok(Q3Join)).describe("auctions joined with their sellers"),
        ]
    }

    fn plan(args: &Args) -> Result<Graph, Error> {
        let query = args.require("query")?;
        let mut g = Graph::new();
        let source = g.add(
            Node::connector("events", "nexmark")
                .config("events", args.require("events")?)
                .config("tps", args.parse_or::<u64>("tps", 10_000_000)?),
        );
        let sink = match args.get("output") {
            Some(dir) => Node::connector("write", "file-sink").config("path", dir),
            None => Node::connector("discard", "blackhole"),
        };
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
            other => {
                return Err(invalid_config(format!(
                    "query `{other}` is not one of q0, q1, q2, q3"
                )));
            }
        };
        let sink = g.add(sink);
        g.forward(&last, &sink);
        Ok(g)
    }
}

sluice_sdk::export_app!(Nexmark);
