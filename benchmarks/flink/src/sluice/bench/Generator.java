package sluice.bench;

import java.io.Serializable;
import java.util.SplittableRandom;

/**
 * The Nexmark stream of {@code guest-sdk/nexmark} (Sluice's generator),
 * ported so that both engines run on the same events: event {@code i} draws
 * its fields from {@code new SplittableRandom(i)} in the same order, from
 * the same fixed tables. The benchmark script checks that the two engines'
 * query results are identical before it measures anything.
 */
public final class Generator implements Serializable {
    private static final long serialVersionUID = 1L;

    private static final long PERSON_PROPORTION = 1;
    private static final long AUCTION_PROPORTION = 3;
    private static final long TOTAL_PROPORTION = 50;
    private static final long FIRST_PERSON_ID = 1000;
    private static final long FIRST_AUCTION_ID = 1000;
    private static final long FIRST_CATEGORY_ID = 10;
    private static final int NUM_CATEGORIES = 5;
    private static final long PERSON_ID_LEAD = 10;
    private static final long AUCTION_ID_LEAD = 10;
    private static final long HOT_BATCH = 100;
    private static final int HOT_AUCTION_RATIO = 2;
    private static final int HOT_SELLER_RATIO = 4;
    private static final int HOT_BIDDER_RATIO = 4;
    private static final long NUM_ACTIVE_PEOPLE = 1000;
    private static final long NUM_IN_FLIGHT_AUCTIONS = 100;
    private static final int AVG_PERSON_BYTES = 200;
    private static final int AVG_AUCTION_BYTES = 500;
    private static final int AVG_BID_BYTES = 100;
    private static final int CHANNELS = 10_000;
    private static final int PADDING_TEXT = 1 << 20;

    private static final String[] FIRST_NAMES = {
        "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter"
    };
    private static final String[] LAST_NAMES = {
        "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris"
    };
    private static final String[] CITIES = {
        "Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend", "Redmond",
        "Seattle", "Kent", "Cheyenne"
    };
    private static final String[] STATES = {"AZ", "CA", "ID", "OR", "WA", "WY"};
    private static final String[] HOT_CHANNELS = {"Google", "Facebook", "Baidu", "Apple"};

    private static final long PADDING_SEED = 0x5EED_0000_0000_0001L;
    private static final long URL_SEED = 0x5EED_0000_0000_0002L;

    /** Sluice's default base time: 2026-01-01T00:00:00Z. */
    public static final long BASE_TIME = 1_767_225_600_000L;

    private final double delayUs;

    /** A generator of {@code tps} events per second of event time. */
    public Generator(long tps) {
        this.delayUs = 1_000_000.0 / Math.max(tps, 1);
    }

    /** The fixed tables, built once per JVM. */
    private static final class Tables {
        static final String PADDING;
        static final String[] HOT_URLS = new String[HOT_CHANNELS.length];
        static final String[] CHANNEL_NAMES = new String[CHANNELS];
        static final String[] CHANNEL_URLS = new String[CHANNELS];

        static {
            PADDING = packedLetters(new SplittableRandom(PADDING_SEED), PADDING_TEXT);
            SplittableRandom rng = new SplittableRandom(URL_SEED);
            for (int k = 0; k < HOT_URLS.length; k++) {
                HOT_URLS[k] = baseUrl(rng);
            }
            for (int i = 0; i < CHANNELS; i++) {
                String url = baseUrl(rng);
                if (rng.nextInt(10) > 0) {
                    url = url + "&channel_id=" + Math.abs(Integer.reverse(i));
                }
                CHANNEL_URLS[i] = url;
                CHANNEL_NAMES[i] = "channel-" + i;
            }
        }
    }

    private static String baseUrl(SplittableRandom rng) {
        String a = randomString(rng, 5, '_');
        String b = randomString(rng, 5, '_');
        String c = randomString(rng, 5, '_');
        return "https://www.nexmark.com/" + a + "/" + b + "/" + c + "/item.htm?query=1";
    }

    private static String packedLetters(SplittableRandom rng, int len) {
        StringBuilder s = new StringBuilder(len);
        int rnd = 0;
        int left = 0;
        for (int i = 0; i < len; i++) {
            if (left == 0) {
                rnd = rng.nextInt();
                left = 6;
            }
            s.append((char) ('a' + rnd % 26));
            rnd /= 26;
            left--;
        }
        return s.toString();
    }

    private static String randomString(SplittableRandom rng, int maxLen, char special) {
        int len = 3 + rng.nextInt(maxLen - 3);
        StringBuilder s = new StringBuilder(len);
        for (int i = 0; i < len; i++) {
            if (rng.nextInt(13) == 0) {
                s.append(special);
            } else {
                s.append((char) ('a' + rng.nextInt(26)));
            }
        }
        // Only spaces can be trimmed: the rest is letters and underscores.
        return s.toString().trim();
    }

    private static String padding(SplittableRandom rng, int current, int average) {
        if (current > average) {
            return "";
        }
        int d = average - current;
        int delta = (int) Math.round(d * 0.2);
        int len = d - delta + (delta == 0 ? 0 : rng.nextInt(2 * delta));
        int start = rng.nextInt(PADDING_TEXT - len);
        return Tables.PADDING.substring(start, start + len);
    }

    private static long price(SplittableRandom rng) {
        return Math.round(Math.pow(10.0, rng.nextDouble() * 6.0) * 100.0);
    }

    /** Sluice's {@code below_u64}: a bounded int draw below 2^31 - 1. */
    private static long below(SplittableRandom rng, long bound) {
        if (bound < Integer.MAX_VALUE) {
            return rng.nextInt((int) bound);
        }
        return Math.abs(rng.nextLong() % bound);
    }

    private static long lastBase0PersonId(long eventId) {
        long epoch = eventId / TOTAL_PROPORTION;
        long offset = Math.min(eventId % TOTAL_PROPORTION, PERSON_PROPORTION - 1);
        return epoch * PERSON_PROPORTION + offset;
    }

    private static long lastBase0AuctionId(long eventId) {
        long epoch = eventId / TOTAL_PROPORTION;
        long offset = eventId % TOTAL_PROPORTION;
        if (offset < PERSON_PROPORTION) {
            epoch--;
            offset = AUCTION_PROPORTION - 1;
        } else if (offset >= PERSON_PROPORTION + AUCTION_PROPORTION) {
            offset = AUCTION_PROPORTION - 1;
        } else {
            offset -= PERSON_PROPORTION;
        }
        return epoch * AUCTION_PROPORTION + offset;
    }

    private static long nextBase0PersonId(long eventId, SplittableRandom rng) {
        long people = lastBase0PersonId(eventId) + 1;
        long active = Math.min(people, NUM_ACTIVE_PEOPLE);
        return people - active + below(rng, active + PERSON_ID_LEAD);
    }

    private static long nextBase0AuctionId(long eventId, SplittableRandom rng) {
        long max = lastBase0AuctionId(eventId);
        long min = Math.max(max - NUM_IN_FLIGHT_AUCTIONS, 0);
        return min + below(rng, max - min + 1 + AUCTION_ID_LEAD);
    }

    /** Event time of event {@code i}, ms since the epoch. */
    public long timestamp(long i) {
        return BASE_TIME + ((long) (i * delayUs)) / 1000;
    }

    /** Event {@code i} of the stream. */
    public Events.Event event(long i) {
        SplittableRandom rng = new SplittableRandom(i);
        long timestamp = timestamp(i);
        long r = i % TOTAL_PROPORTION;
        Events.Event e = new Events.Event();
        if (r < PERSON_PROPORTION) {
            e.person = person(i, timestamp, rng);
        } else if (r < PERSON_PROPORTION + AUCTION_PROPORTION) {
            e.auction = auction(i, timestamp, rng);
        } else {
            e.bid = bid(i, timestamp, rng);
        }
        return e;
    }

    private static String fourDigits(int n) {
        String s = Integer.toString(n);
        return "0000".substring(s.length()) + s;
    }

    private Events.Person person(long id, long timestamp, SplittableRandom rng) {
        Events.Person p = new Events.Person();
        String first = FIRST_NAMES[rng.nextInt(FIRST_NAMES.length)];
        String last = LAST_NAMES[rng.nextInt(LAST_NAMES.length)];
        p.name = first + " " + last;
        String user = randomString(rng, 7, ' ');
        String host = randomString(rng, 5, ' ');
        p.emailAddress = user + "@" + host + ".com";
        String a = fourDigits(rng.nextInt(10_000));
        String b = fourDigits(rng.nextInt(10_000));
        String c = fourDigits(rng.nextInt(10_000));
        String d = fourDigits(rng.nextInt(10_000));
        p.creditCard = a + " " + b + " " + c + " " + d;
        p.city = CITIES[rng.nextInt(CITIES.length)];
        p.state = STATES[rng.nextInt(STATES.length)];
        int size = 8 + p.name.length() + p.emailAddress.length() + p.creditCard.length()
            + p.city.length() + p.state.length();
        p.id = lastBase0PersonId(id) + FIRST_PERSON_ID;
        p.dateTime = timestamp;
        p.extra = padding(rng, size, AVG_PERSON_BYTES);
        return p;
    }

    private Events.Auction auction(long i, long timestamp, SplittableRandom rng) {
        Events.Auction a = new Events.Auction();
        long seller;
        if (rng.nextInt(HOT_SELLER_RATIO) > 0) {
            seller = lastBase0PersonId(i) / HOT_BATCH * HOT_BATCH;
        } else {
            seller = nextBase0PersonId(i, rng);
        }
        a.category = FIRST_CATEGORY_ID + rng.nextInt(NUM_CATEGORIES);
        a.initialBid = price(rng);
        long lookahead = (NUM_IN_FLIGHT_AUCTIONS * TOTAL_PROPORTION) / AUCTION_PROPORTION;
        long horizon = timestamp(i + lookahead) - timestamp;
        long length = 1 + below(rng, Math.max(2 * horizon, 1));
        a.itemName = randomString(rng, 20, ' ');
        a.description = randomString(rng, 100, ' ');
        a.reserve = a.initialBid + price(rng);
        int size = 8 + a.itemName.length() + a.description.length() + 40;
        a.id = lastBase0AuctionId(i) + FIRST_AUCTION_ID;
        a.dateTime = timestamp;
        a.expires = timestamp + length;
        a.seller = seller + FIRST_PERSON_ID;
        a.extra = padding(rng, size, AVG_AUCTION_BYTES);
        return a;
    }

    private Events.Bid bid(long id, long timestamp, SplittableRandom rng) {
        Events.Bid b = new Events.Bid();
        long auction;
        if (rng.nextInt(HOT_AUCTION_RATIO) > 0) {
            auction = lastBase0AuctionId(id) / HOT_BATCH * HOT_BATCH;
        } else {
            auction = nextBase0AuctionId(id, rng);
        }
        long bidder;
        if (rng.nextInt(HOT_BIDDER_RATIO) > 0) {
            bidder = lastBase0PersonId(id) / HOT_BATCH * HOT_BATCH + 1;
        } else {
            bidder = nextBase0PersonId(id, rng);
        }
        b.price = price(rng);
        if (rng.nextInt(2) > 0) {
            int k = rng.nextInt(HOT_CHANNELS.length);
            b.channel = HOT_CHANNELS[k];
            b.url = Tables.HOT_URLS[k];
        } else {
            int c = rng.nextInt(CHANNELS);
            b.channel = Tables.CHANNEL_NAMES[c];
            b.url = Tables.CHANNEL_URLS[c];
        }
        b.auction = auction + FIRST_AUCTION_ID;
        b.bidder = bidder + FIRST_PERSON_ID;
        b.dateTime = timestamp;
        b.extra = padding(rng, 32, AVG_BID_BYTES);
        return b;
    }
}
