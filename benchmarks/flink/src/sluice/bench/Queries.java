package sluice.bench;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.Map;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.functions.CoGroupFunction;
import org.apache.flink.api.common.functions.FilterFunction;
import org.apache.flink.api.common.functions.FlatMapFunction;
import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.functions.RichMapFunction;
import org.apache.flink.api.common.serialization.SimpleStringEncoder;
import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.connector.source.lib.NumberSequenceSource;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.api.java.tuple.Tuple3;
import org.apache.flink.connector.file.sink.FileSink;
import org.apache.flink.core.execution.CheckpointingMode;
import org.apache.flink.core.fs.Path;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.streaming.api.functions.sink.filesystem.bucketassigners.BasePathBucketAssigner;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.windowing.assigners.SlidingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.util.Collector;

import sluice.bench.Events.Auction;
import sluice.bench.Events.Bid;
import sluice.bench.Events.Event;
import sluice.bench.Events.Person;

/**
 * The Nexmark queries of {@code examples/nexmark} (and the synthetic
 * pipeline) as Flink DataStream jobs with the same results, written the way
 * a Flink user would: window operators for windows, keyed state and timers
 * for joins.
 *
 * <p>Arguments as Sluice's: {@code query=q0|q1|q2|q3|q4|q5|q7|q8|synthetic
 * events=N [tps=T] [output=DIR]}; exactly-once checkpoints every second
 * ({@code checkpoint-ms=MS} to change). The parallelism is the job's
 * ({@code flink run -p}); {@code events} must be a multiple of it.
 */
public final class Queries {
    private static final long TUMBLE_MS = 10_000;
    private static final Duration TUMBLE = Duration.ofMillis(TUMBLE_MS);
    private static final Duration HOP_SIZE = Duration.ofSeconds(10);
    private static final Duration HOP_SLIDE = Duration.ofSeconds(2);
    private static final Duration WATERMARK_DELAY = Duration.ofMillis(4000);

    private Queries() {}

    public static void main(String[] argv) throws Exception {
        Map<String, String> args = new HashMap<>();
        for (String a : argv) {
            int eq = a.indexOf('=');
            if (eq <= 0) {
                throw new IllegalArgumentException("expected KEY=VALUE, got `" + a + "`");
            }
            args.put(a.substring(0, eq), a.substring(eq + 1));
        }
        String query = require(args, "query");
        long events = Long.parseLong(require(args, "events"));
        long tps = Long.parseLong(args.getOrDefault("tps", "10000000"));
        long checkpointMs = Long.parseLong(args.getOrDefault("checkpoint-ms", "1000"));

        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.enableCheckpointing(checkpointMs, CheckpointingMode.EXACTLY_ONCE);
        int parallelism = env.getParallelism();
        if (events % parallelism != 0) {
            throw new IllegalArgumentException(
                "events (" + events + ") must be a multiple of the parallelism (" + parallelism + ")");
        }

        DataStream<String> out;
        if (query.equals("synthetic")) {
            env.fromSource(new NumberSequenceSource(0, events - 1), WatermarkStrategy.noWatermarks(),
                    "generate")
                .map(new ToRecord())
                .filter(new KeepNineInTen())
                .keyBy(new RecordKey())
                .map(new CountPerKey())
                .sinkTo(new DiscardingSink<>());
            env.execute("synthetic");
            return;
        }
        DataStream<Event> stream = env
            .fromSource(new NumberSequenceSource(0, events - 1), WatermarkStrategy.noWatermarks(),
                "nexmark")
            .map(new ToEvent(events / parallelism, parallelism, tps))
            .assignTimestampsAndWatermarks(
                WatermarkStrategy.<Event>forBoundedOutOfOrderness(WATERMARK_DELAY)
                    .withTimestampAssigner((e, previous) -> e.time()));
        switch (query) {
            case "q0":
                out = stream.flatMap(new Q0());
                break;
            case "q1":
                out = stream.flatMap(new Q1());
                break;
            case "q2":
                out = stream.flatMap(new Q2());
                break;
            case "q3":
                out = stream.filter(new Q3Select()).keyBy(new BySeller()).process(new Q3Join());
                break;
            case "q4":
                out = stream.filter(new AuctionsAndBids()).keyBy(new ByAuction())
                    .process(new Q4Winner())
                    .keyBy(new ByCategory())
                    .window(TumblingEventTimeWindows.of(TUMBLE))
                    .aggregate(new Average(), new Q4Line());
                break;
            case "q5":
                out = stream.filter(new BidsOnly()).keyBy(new ByAuction())
                    .window(SlidingEventTimeWindows.of(HOP_SIZE, HOP_SLIDE))
                    .aggregate(new CountBids(), new WithWindowStart())
                    .keyBy(new ByWindowStart())
                    .process(new Q5Hot());
                break;
            case "q7":
                out = stream.filter(new BidsOnly()).keyBy(new ByTumble())
                    .window(TumblingEventTimeWindows.of(TUMBLE))
                    .aggregate(new HighestBids(), new Q7Lines());
                break;
            case "q8":
                out = stream.filter(new PersonsOnly())
                    .coGroup(stream.filter(new AuctionsOnly()))
                    .where(new BySeller()).equalTo(new BySeller())
                    .window(TumblingEventTimeWindows.of(TUMBLE))
                    .apply(new Q8Join(), Types.STRING);
                break;
            default:
                throw new IllegalArgumentException("query `" + query
                    + "` is not one of q0, q1, q2, q3, q4, q5, q7, q8, synthetic");
        }
        String output = args.get("output");
        if (output != null) {
            out.sinkTo(FileSink.forRowFormat(new Path(output), new SimpleStringEncoder<String>("UTF-8"))
                .withBucketAssigner(new BasePathBucketAssigner<>())
                .build());
        } else {
            out.sinkTo(new DiscardingSink<>());
        }
        env.execute("nexmark " + query);
    }

    private static String require(Map<String, String> args, String key) {
        String v = args.get(key);
        if (v == null) {
            throw new IllegalArgumentException("missing argument " + key + "=...");
        }
        return v;
    }

    private static long tumble(long ts) {
        return ts - Math.floorMod(ts, TUMBLE_MS);
    }

    /**
     * Element {@code x} of the number sequence as an event. Flink splits the
     * sequence into one contiguous range per subtask; each range is mapped
     * to the stride {@code s, s + p, ...} so that, as in Sluice's source,
     * every subtask's event time advances with the others'.
     */
    public static final class ToEvent implements MapFunction<Long, Event> {
        private final long perSubtask;
        private final long parallelism;
        private final Generator generator;

        ToEvent(long perSubtask, long parallelism, long tps) {
            this.perSubtask = perSubtask;
            this.parallelism = parallelism;
            this.generator = new Generator(tps);
        }

        @Override
        public Event map(Long x) {
            long index = (x % perSubtask) * parallelism + x / perSubtask;
            return generator.event(index);
        }
    }

    /** Bids as {@code auction,bidder,price,dateTime,extra}. */
    public static final class Q0 implements FlatMapFunction<Event, String> {
        @Override
        public void flatMap(Event e, Collector<String> out) {
            Bid b = e.bid;
            if (b != null) {
                out.collect(b.auction + "," + b.bidder + "," + b.price + "," + b.dateTime + "," + b.extra);
            }
        }
    }

    /** Bids with the price in euro cents, to the thousandth. */
    public static final class Q1 implements FlatMapFunction<Event, String> {
        @Override
        public void flatMap(Event e, Collector<String> out) {
            Bid b = e.bid;
            if (b != null) {
                long thousandths = b.price * 908;
                String frac = Long.toString(thousandths % 1000);
                out.collect(b.auction + "," + b.bidder + "," + thousandths / 1000 + "."
                    + "000".substring(frac.length()) + frac + "," + b.dateTime + "," + b.extra);
            }
        }
    }

    /** Bids on every 123rd auction. */
    public static final class Q2 implements FlatMapFunction<Event, String> {
        @Override
        public void flatMap(Event e, Collector<String> out) {
            Bid b = e.bid;
            if (b != null && b.auction % 123 == 0) {
                out.collect(b.auction + "," + b.price);
            }
        }
    }

    public static final class Q3Select implements FilterFunction<Event> {
        @Override
        public boolean filter(Event e) {
            if (e.person != null) {
                String s = e.person.state;
                return s.equals("OR") || s.equals("ID") || s.equals("CA");
            }
            return e.auction != null && e.auction.category == 10;
        }
    }

    /** Persons by id, auctions by seller. */
    public static final class BySeller implements KeySelector<Event, Long> {
        @Override
        public Long getKey(Event e) {
            return e.person != null ? e.person.id : e.auction.seller;
        }
    }

    /** Category-10 auctions joined with their sellers from OR, ID or CA. */
    public static final class Q3Join extends KeyedProcessFunction<Long, Event, String> {
        private transient ValueState<String> seller;
        private transient ListState<Long> waiting;

        @Override
        public void open(OpenContext context) {
            seller = getRuntimeContext().getState(new ValueStateDescriptor<>("seller", Types.STRING));
            waiting = getRuntimeContext().getListState(new ListStateDescriptor<>("waiting", Types.LONG));
        }

        @Override
        public void processElement(Event e, Context ctx, Collector<String> out) throws Exception {
            if (e.person != null) {
                Person p = e.person;
                String who = p.name + "," + p.city + "," + p.state;
                Iterable<Long> early = waiting.get();
                if (early != null) {
                    for (Long auction : early) {
                        out.collect(who + "," + auction);
                    }
                }
                waiting.clear();
                seller.update(who);
            } else {
                String who = seller.value();
                if (who != null) {
                    out.collect(who + "," + e.auction.id);
                } else {
                    waiting.add(e.auction.id);
                }
            }
        }
    }

    public static final class AuctionsAndBids implements FilterFunction<Event> {
        @Override
        public boolean filter(Event e) {
            return e.person == null;
        }
    }

    public static final class BidsOnly implements FilterFunction<Event> {
        @Override
        public boolean filter(Event e) {
            return e.bid != null;
        }
    }

    public static final class PersonsOnly implements FilterFunction<Event> {
        @Override
        public boolean filter(Event e) {
            return e.person != null;
        }
    }

    public static final class AuctionsOnly implements FilterFunction<Event> {
        @Override
        public boolean filter(Event e) {
            return e.auction != null;
        }
    }

    /** Auctions by id, bids by auction. */
    public static final class ByAuction implements KeySelector<Event, Long> {
        @Override
        public Long getKey(Event e) {
            return e.bid != null ? e.bid.auction : e.auction.id;
        }
    }

    /**
     * Each auction's highest bid placed while it was open, emitted at its
     * expiry as (category, price); bids that arrive before their auction
     * wait for it one tumbling window.
     */
    public static final class Q4Winner extends KeyedProcessFunction<Long, Event, Tuple2<Long, Long>> {
        /** (category, opened, expires). */
        private transient ValueState<Tuple3<Long, Long, Long>> auction;
        private transient ValueState<Long> best;
        /** Early bids: (time, price). */
        private transient ListState<Tuple2<Long, Long>> early;

        @Override
        public void open(OpenContext context) {
            auction = getRuntimeContext().getState(new ValueStateDescriptor<>("auction",
                Types.TUPLE(Types.LONG, Types.LONG, Types.LONG)));
            best = getRuntimeContext().getState(new ValueStateDescriptor<>("best", Types.LONG));
            early = getRuntimeContext().getListState(new ListStateDescriptor<>("early",
                Types.TUPLE(Types.LONG, Types.LONG)));
        }

        private void bid(Tuple3<Long, Long, Long> a, long at, long price) throws Exception {
            if (at >= a.f1 && at <= a.f2) {
                Long b = best.value();
                if (b == null || price > b) {
                    best.update(price);
                }
            }
        }

        @Override
        public void processElement(Event e, Context ctx, Collector<Tuple2<Long, Long>> out)
                throws Exception {
            if (e.auction != null) {
                Auction a = e.auction;
                Tuple3<Long, Long, Long> known = Tuple3.of(a.category, a.dateTime, a.expires);
                auction.update(known);
                Iterable<Tuple2<Long, Long>> waiting = early.get();
                if (waiting != null) {
                    for (Tuple2<Long, Long> b : waiting) {
                        bid(known, b.f0, b.f1);
                    }
                }
                early.clear();
                ctx.timerService().registerEventTimeTimer(a.expires);
            } else {
                Tuple3<Long, Long, Long> known = auction.value();
                if (known != null) {
                    bid(known, e.bid.dateTime, e.bid.price);
                } else {
                    early.add(Tuple2.of(e.bid.dateTime, e.bid.price));
                    ctx.timerService().registerEventTimeTimer(e.bid.dateTime + TUMBLE_MS);
                }
            }
        }

        @Override
        public void onTimer(long time, OnTimerContext ctx, Collector<Tuple2<Long, Long>> out)
                throws Exception {
            Tuple3<Long, Long, Long> known = auction.value();
            if (known != null) {
                if (time >= known.f2) {
                    Long price = best.value();
                    if (price != null) {
                        out.collect(Tuple2.of(known.f0, price));
                    }
                    auction.clear();
                    best.clear();
                }
                return;
            }
            ArrayList<Tuple2<Long, Long>> keep = new ArrayList<>();
            Iterable<Tuple2<Long, Long>> waiting = early.get();
            if (waiting != null) {
                for (Tuple2<Long, Long> b : waiting) {
                    if (b.f0 + TUMBLE_MS > time) {
                        keep.add(b);
                    }
                }
            }
            early.update(keep);
        }
    }

    public static final class ByCategory implements KeySelector<Tuple2<Long, Long>, Long> {
        @Override
        public Long getKey(Tuple2<Long, Long> t) {
            return t.f0;
        }
    }

    /** (auctions, sum of prices) of (category, price) pairs. */
    public static final class Average
            implements AggregateFunction<Tuple2<Long, Long>, Tuple2<Long, Long>, Tuple2<Long, Long>> {
        @Override
        public Tuple2<Long, Long> createAccumulator() {
            return Tuple2.of(0L, 0L);
        }

        @Override
        public Tuple2<Long, Long> add(Tuple2<Long, Long> t, Tuple2<Long, Long> acc) {
            return Tuple2.of(acc.f0 + 1, acc.f1 + t.f1);
        }

        @Override
        public Tuple2<Long, Long> getResult(Tuple2<Long, Long> acc) {
            return acc;
        }

        @Override
        public Tuple2<Long, Long> merge(Tuple2<Long, Long> a, Tuple2<Long, Long> b) {
            return Tuple2.of(a.f0 + b.f0, a.f1 + b.f1);
        }
    }

    /** {@code category,windowStart,auctions,average}. */
    public static final class Q4Line
            extends ProcessWindowFunction<Tuple2<Long, Long>, String, Long, TimeWindow> {
        @Override
        public void process(Long category, Context ctx, Iterable<Tuple2<Long, Long>> sums,
                Collector<String> out) {
            for (Tuple2<Long, Long> s : sums) {
                out.collect(category + "," + ctx.window().getStart() + "," + s.f0 + "," + s.f1 / s.f0);
            }
        }
    }

    public static final class CountBids implements AggregateFunction<Event, Long, Long> {
        @Override
        public Long createAccumulator() {
            return 0L;
        }

        @Override
        public Long add(Event e, Long n) {
            return n + 1;
        }

        @Override
        public Long getResult(Long n) {
            return n;
        }

        @Override
        public Long merge(Long a, Long b) {
            return a + b;
        }
    }

    /** (window start, auction, bids). */
    public static final class WithWindowStart
            extends ProcessWindowFunction<Long, Tuple3<Long, Long, Long>, Long, TimeWindow> {
        @Override
        public void process(Long auction, Context ctx, Iterable<Long> counts,
                Collector<Tuple3<Long, Long, Long>> out) {
            for (Long n : counts) {
                out.collect(Tuple3.of(ctx.window().getStart(), auction, n));
            }
        }
    }

    public static final class ByWindowStart implements KeySelector<Tuple3<Long, Long, Long>, Long> {
        @Override
        public Long getKey(Tuple3<Long, Long, Long> t) {
            return t.f0;
        }
    }

    /** Per window, the auctions with the most bids, as {@code auction,bids}. */
    public static final class Q5Hot extends KeyedProcessFunction<Long, Tuple3<Long, Long, Long>, String> {
        private transient ValueState<Long> most;
        private transient ListState<Long> auctions;

        @Override
        public void open(OpenContext context) {
            most = getRuntimeContext().getState(new ValueStateDescriptor<>("most", Types.LONG));
            auctions = getRuntimeContext().getListState(new ListStateDescriptor<>("auctions", Types.LONG));
        }

        @Override
        public void processElement(Tuple3<Long, Long, Long> t, Context ctx, Collector<String> out)
                throws Exception {
            Long m = most.value();
            if (m == null || t.f2 > m) {
                most.update(t.f2);
                auctions.clear();
                m = t.f2;
            }
            if (t.f2.equals(m)) {
                auctions.add(t.f1);
            }
            ctx.timerService().registerEventTimeTimer(t.f0 + HOP_SIZE.toMillis() - 1);
        }

        @Override
        public void onTimer(long time, OnTimerContext ctx, Collector<String> out) throws Exception {
            Long m = most.value();
            if (m != null) {
                for (Long auction : auctions.get()) {
                    out.collect(auction + "," + m);
                }
            }
            most.clear();
            auctions.clear();
        }
    }

    public static final class ByTumble implements KeySelector<Event, Long> {
        @Override
        public Long getKey(Event e) {
            return tumble(e.time());
        }
    }

    /** A window's highest price and its bids as output lines. */
    public static final class Highest {
        public long price = -1;
        public ArrayList<String> bids = new ArrayList<>();

        public Highest() {}
    }

    public static final class HighestBids implements AggregateFunction<Event, Highest, Highest> {
        @Override
        public Highest createAccumulator() {
            return new Highest();
        }

        @Override
        public Highest add(Event e, Highest h) {
            Bid b = e.bid;
            if (b.price > h.price) {
                h.price = b.price;
                h.bids.clear();
            }
            if (b.price == h.price) {
                h.bids.add(b.auction + "," + b.price + "," + b.bidder + "," + b.dateTime + "," + b.extra);
            }
            return h;
        }

        @Override
        public Highest getResult(Highest h) {
            return h;
        }

        @Override
        public Highest merge(Highest a, Highest b) {
            if (b.price > a.price) {
                return b;
            }
            if (b.price == a.price) {
                a.bids.addAll(b.bids);
            }
            return a;
        }
    }

    public static final class Q7Lines extends ProcessWindowFunction<Highest, String, Long, TimeWindow> {
        @Override
        public void process(Long start, Context ctx, Iterable<Highest> highest, Collector<String> out) {
            for (Highest h : highest) {
                for (String line : h.bids) {
                    out.collect(line);
                }
            }
        }
    }

    /** Persons who registered and opened an auction in one window. */
    public static final class Q8Join implements CoGroupFunction<Event, Event, String> {
        @Override
        public void coGroup(Iterable<Event> persons, Iterable<Event> auctions, Collector<String> out) {
            if (!auctions.iterator().hasNext()) {
                return;
            }
            for (Event e : persons) {
                Person p = e.person;
                out.collect(p.id + "," + p.name + "," + tumble(p.dateTime));
            }
        }
    }

    /** The synthetic pipeline's record: the index and 100 bytes. */
    public static final class Record {
        public long index;
        public byte[] payload;

        public Record() {}
    }

    /** The index in decimal, padded with {@code .} to 100 bytes (Sluice's datagen). */
    public static final class ToRecord implements MapFunction<Long, Record> {
        @Override
        public Record map(Long i) {
            Record r = new Record();
            r.index = i;
            r.payload = new byte[100];
            byte[] digits = Long.toString(i).getBytes(java.nio.charset.StandardCharsets.US_ASCII);
            System.arraycopy(digits, 0, r.payload, 0, digits.length);
            java.util.Arrays.fill(r.payload, digits.length, 100, (byte) '.');
            return r;
        }
    }

    public static final class KeepNineInTen implements FilterFunction<Record> {
        @Override
        public boolean filter(Record r) {
            return r.index % 10 != 0;
        }
    }

    public static final class RecordKey implements KeySelector<Record, Long> {
        @Override
        public Long getKey(Record r) {
            return r.index % 10_000;
        }
    }

    /** Records per key so far, in keyed state. */
    public static final class CountPerKey extends RichMapFunction<Record, Long> {
        private transient ValueState<Long> count;

        @Override
        public void open(OpenContext context) {
            count = getRuntimeContext().getState(new ValueStateDescriptor<>("count", Types.LONG));
        }

        @Override
        public Long map(Record r) throws Exception {
            Long n = count.value();
            long next = n == null ? 1 : n + 1;
            count.update(next);
            return next;
        }
    }
}
