//! Echoes records back in the layout they came in, touching every byte, so
//! the benchmark measures the boundary in both directions plus a pass over
//! the data — what an operator that emits one record per input costs.

wit_bindgen::generate!({ path: "../wit/layout.wit", world: "layout" });

struct Layout;

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
            let end = (pos + m.value_len as usize).min(data.len());
            data[pos..end].iter_mut().for_each(|b| *b = b.wrapping_add(1));
            pos = end;
        }
        (data, meta)
    }
}

export!(Layout);
