//! Key groups as the golden vectors in `guest-sdk/golden` say: the vectors
//! every SDK (and the host's routing) is tested against, computed by an
//! independent implementation of xxh3.

use sluice_keygroup::{hash, key_group, owner, range};

#[test]
fn every_golden_key_hashes_groups_and_lands_where_the_vectors_say() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../golden/vectors.json"
    ))
    .expect("golden vectors");
    let vectors: serde_json::Value = serde_json::from_str(&text).expect("json");
    let cases = vectors["key_groups"].as_array().expect("key_groups");
    assert!(cases.len() >= 20, "{} cases", cases.len());
    let mut checked = 0;
    for case in cases {
        let key = hex::decode(case["key_hex"].as_str().expect("key")).expect("hex");
        assert_eq!(Some(key.len() as u64), case["length"].as_u64());
        let want: u64 = case["xxh3_64"]
            .as_str()
            .expect("xxh3")
            .parse()
            .expect("u64");
        assert_eq!(hash(&key), want, "xxh3 of {} bytes", key.len());
        for g in case["groups"].as_array().expect("groups") {
            let max = u32::try_from(g["max_parallelism"].as_u64().expect("max")).expect("u32");
            let kg = key_group(&key, max);
            assert_eq!(Some(u64::from(kg)), g["key_group"].as_u64(), "max {max}");
            for (p, o) in g["owner_by_parallelism"].as_object().expect("owners") {
                let p: u32 = p.parse().expect("parallelism");
                let o = u32::try_from(o.as_u64().expect("owner")).expect("u32");
                assert_eq!(owner(kg, max, p), o, "max {max} parallelism {p}");
                assert!(range(o, max, p).contains(&kg));
                checked += 1;
            }
        }
    }
    assert!(checked > 500, "{checked} placements");
}
