//! Echoes records back in the layout they came in, touching every byte, so
//! the benchmark measures the boundary in both directions plus a pass over
//! the data — what an operator that emits one record per input costs.

wit_bindgen::generate!({ path: "../wit/layout.wit", world: "layout" });

struct Layout;

/// Walks one record of `data` from `pos` as its metadata describes (every
/// field read, as the SDK does), touching its value; the record's end.
fn touch(data: &mut [u8], pos: usize, key_len: u32, value_len: u32, timestamp: i64) -> usize {
    let start = if key_len == u32::MAX {
        pos
    } else {
        pos + key_len as usize
    };
    let end = (start + value_len as usize).min(data.len());
    let bump = 1u8.wrapping_add((timestamp != 0) as u8);
    data[start.min(end)..end]
        .iter_mut()
        .for_each(|b| *b = b.wrapping_add(bump));
    end
}

impl Guest for Layout {
    fn nested(values: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        values
            .into_iter()
            .map(|mut v| {
                v.iter_mut().for_each(|b| *b = b.wrapping_add(1));
                v
            })
            .collect()
    }

    fn flat(mut data: Vec<u8>, meta: Vec<RecordMeta>) -> (Vec<u8>, Vec<RecordMeta>) {
        let mut pos = 0usize;
        for m in &meta {
            pos = touch(&mut data, pos, m.key_len, m.value_len, m.timestamp);
        }
        (data, meta)
    }

    fn packed(mut data: Vec<u8>, meta: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
        let mut pos = 0usize;
        for m in meta.as_chunks::<16>().0 {
            let [k0, k1, k2, k3, v0, v1, v2, v3, t @ ..] = *m;
            pos = touch(
                &mut data,
                pos,
                u32::from_le_bytes([k0, k1, k2, k3]),
                u32::from_le_bytes([v0, v1, v2, v3]),
                i64::from_le_bytes(t),
            );
        }
        (data, meta)
    }
}

export!(Layout);
