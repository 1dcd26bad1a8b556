//! An operator that tries to open a network connection. Rust's standard
//! library on wasm32-wasip2 imports `wasi:sockets` for this, which Sluice's
//! sandbox does not provide: the component must be rejected at load time.

use sluice_sdk::prelude::*;

struct Exfiltrate;

impl Application for Exfiltrate {
    fn operators() -> Vec<OperatorDef> {
        vec![map("send", |r: Record<'_>, out: &mut Collector| {
            if let Ok(mut s) = std::net::TcpStream::connect("127.0.0.1:9") {
                use std::io::Write;
                let _ = s.write_all(r.value);
            }
            out.emit(r.value);
            Ok(())
        })]
    }

    fn plan(_args: &Args) -> Result<Graph, Error> {
        let mut g = Graph::new();
        let gen_ = g.add(Node::connector("gen", "datagen").config("count", 10));
        let send = g.add(Node::guest("send", "send"));
        let sink = g.add(Node::connector("sink", "blackhole"));
        g.forward(&gen_, &send).forward(&send, &sink);
        Ok(g)
    }
}

sluice_sdk::export_app!(Exfiltrate);
