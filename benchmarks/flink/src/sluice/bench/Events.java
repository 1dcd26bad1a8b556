package sluice.bench;

/**
 * Nexmark's events as Flink POJOs (public fields and no-argument
 * constructors, so Flink's POJO serializer handles them). An {@link Event}
 * holds exactly one of a person, an auction or a bid.
 */
public final class Events {
    private Events() {}

    /** A new person. */
    public static class Person {
        public long id;
        public String name;
        public String emailAddress;
        public String creditCard;
        public String city;
        public String state;
        public long dateTime;
        public String extra;

        public Person() {}
    }

    /** A new auction. */
    public static class Auction {
        public long id;
        public String itemName;
        public String description;
        public long initialBid;
        public long reserve;
        public long dateTime;
        public long expires;
        public long seller;
        public long category;
        public String extra;

        public Auction() {}
    }

    /** A bid. */
    public static class Bid {
        public long auction;
        public long bidder;
        public long price;
        public String channel;
        public String url;
        public long dateTime;
        public String extra;

        public Bid() {}
    }

    /** One event of the stream. */
    public static class Event {
        public Person person;
        public Auction auction;
        public Bid bid;

        public Event() {}

        /** Event time, ms since the epoch. */
        public long time() {
            if (person != null) {
                return person.dateTime;
            }
            return auction != null ? auction.dateTime : bid.dateTime;
        }
    }
}
