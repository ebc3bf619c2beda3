//! Codec benchmarks: nearfield's codec (`serde_avro_fast`, and the hand-written reader and
//! writer of `schemas/src/fast.rs` where a record has one) against the reference
//! `apache-avro` serde path, for the records on the hot path.
//!
//! `cargo bench -p nearfield-schemas --bench codec`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nearfield_schemas::golden::vectors;
use nearfield_schemas::{AvroRecord, Codec, DemandWindow, SaleEvent, SaleEventRef};

fn sale() -> SaleEvent {
    let v = vectors().into_iter().find(|v| v.record == "SaleEvent").expect("vector");
    Codec::single_object().decode(&v.bytes).expect("decodes")
}

fn window() -> DemandWindow {
    let v = vectors().into_iter().find(|v| v.record == "DemandWindow").expect("vector");
    Codec::single_object().decode(&v.bytes).expect("decodes")
}

fn bench_record<T: AvroRecord + Clone>(c: &mut Criterion, value: T) {
    let codec = Codec::single_object();
    let bytes = codec.encode(&value).expect("encodes");
    let schema = apache_avro::Schema::parse_str(T::schemas().current().json).expect("parses");
    let mut g = c.benchmark_group(T::NAME);
    g.throughput(Throughput::Elements(1));

    let mut buf = Vec::with_capacity(256);
    // The codec: a hand-written writer where the record has one (`DemandWindow`),
    // `serde_avro_fast` otherwise.
    g.bench_function("encode/nearfield", |b| {
        b.iter(|| {
            buf.clear();
            codec.encode_into(black_box(&value), &mut buf).expect("encodes");
            black_box(buf.len())
        })
    });
    let current = T::schemas().current();
    g.bench_function("encode/serde_avro_fast", |b| {
        b.iter(|| {
            buf.clear();
            let mut config = serde_avro_fast::ser::SerializerConfig::new(&current.fast);
            serde_avro_fast::to_datum(black_box(&value), &mut buf, &mut config).expect("encodes");
            black_box(buf.len())
        })
    });
    g.bench_function("decode/nearfield(serde_avro_fast)", |b| {
        b.iter(|| black_box(codec.decode::<T>(black_box(&bytes)).expect("decodes")))
    });
    g.bench_function("encode/apache-avro", |b| {
        b.iter(|| {
            let v = apache_avro::to_value(black_box(&value)).expect("value");
            let v = v.resolve(&schema).expect("resolves");
            black_box(apache_avro::to_avro_datum(&schema, v).expect("encodes"))
        })
    });
    g.bench_function("decode/apache-avro", |b| {
        b.iter(|| {
            let mut datum = &bytes[10..];
            let v = apache_avro::from_avro_datum(&schema, &mut datum, None).expect("decodes");
            black_box(apache_avro::from_value::<T>(&v).expect("typed"))
        })
    });
    g.finish();
}

/// The aggregator's decode of a `SaleEvent`: borrowed, by the general decoder and by the
/// hand-written reader of the current layout (`Codec::decode_sale`).
fn sale_borrowed(c: &mut Criterion) {
    let codec = Codec::single_object();
    let bytes = codec.encode(&sale()).expect("encodes");
    let mut g = c.benchmark_group("SaleEventRef");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode/general(serde_avro_fast)", |b| {
        b.iter(|| {
            let ev = codec.decode_as::<SaleEvent, SaleEventRef<'_>>(black_box(&bytes));
            black_box(ev.expect("decodes").quantity)
        })
    });
    g.bench_function("decode/decode_sale", |b| {
        b.iter(|| black_box(codec.decode_sale(black_box(&bytes)).expect("decodes").quantity))
    });
    g.finish();
}

fn codecs(c: &mut Criterion) {
    sale_borrowed(c);
    bench_record(c, sale());
    bench_record(c, window());
}

criterion_group!(benches, codecs);
criterion_main!(benches);
